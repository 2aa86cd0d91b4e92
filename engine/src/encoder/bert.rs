//! BERT's forward pass written for inference throughput on CPUs.
//!
//! The layer arithmetic is the one of `transformers`' `BertModel` (absolute positions, post-layer
//! norm, additive attention mask), but organised for speed on a few cores:
//! - one batch runs on one thread from start to finish, so batches run side by side with no
//!   synchronisation inside a layer (the encoder hands batches to rayon);
//! - the query, key and value projections are one fused matrix product, the attention scale is
//!   folded into the score product, residual additions are accumulated by the output products,
//!   and bias + activation is one pass;
//! - every intermediate lives in a per-thread scratch buffer reused from batch to batch, so no
//!   layer allocates (fresh allocations of this size cost page faults on every call).
//!
//! Weights are converted to f32 once at load and stored input-major (`[in, out]`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::Value;

use super::bf16::{self, PackedB};
use super::config::model_error;
use super::ops::{self, grow, Act, Mat};
use super::packed::{self, PackedMat};
use crate::error::Result;

/// A dense layer, `y = x·W + b`.
struct Linear {
    w: Dense,
    b: Vec<f32>,
    inp: usize,
    out: usize,
}

/// A dense layer's `W` (`[in, out]`) in the form its kernel reads.
enum Dense {
    /// Row-major, for the general f32 product (CPUs without AVX-512).
    Plain(Vec<f32>),
    /// Panels for the AVX-512 f32 kernel.
    F32(PackedMat),
    /// bf16 pairs for the AVX-512 BF16 kernel, when the encoder runs in bf16.
    Bf16(PackedB),
}

/// Which kernels the encoder's products run on, chosen once at load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    /// The general f32 product (`gemm`).
    General,
    /// The packed AVX-512 f32 kernel.
    F32,
    /// The packed AVX-512 BF16 kernel.
    Bf16,
}

/// Layer-norm parameters.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

/// A BERT encoder (embeddings + transformer layers, no pooler).
pub(crate) struct Bert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
    eps: f32,
    act: Act,
    kernel: Kernel,
}

/// The configuration fields the forward pass needs.
struct Dims {
    hidden: usize,
    heads: usize,
    layers: usize,
    intermediate: usize,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
    eps: f32,
    act: Act,
}

fn dims(config_path: &Path, raw: &Value) -> Result<Dims> {
    let int = |k: &str| {
        raw.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| model_error(config_path, format!("missing or non-integer {k:?}")))
    };
    let act = match raw.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu") {
        "gelu" => Act::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_approximate" | "gelu_fast" => Act::GeluTanh,
        "relu" => Act::Relu,
        other => return Err(model_error(config_path, format!("unsupported hidden_act {other:?}"))),
    };
    let position = raw.get("position_embedding_type").and_then(Value::as_str).unwrap_or("absolute");
    if position != "absolute" {
        return Err(model_error(
            config_path,
            format!("unsupported position_embedding_type {position:?}: only \"absolute\""),
        ));
    }
    let d = Dims {
        hidden: int("hidden_size")?,
        heads: int("num_attention_heads")?,
        layers: int("num_hidden_layers")?,
        intermediate: int("intermediate_size")?,
        vocab: int("vocab_size")?,
        max_positions: int("max_position_embeddings")?,
        type_vocab: raw.get("type_vocab_size").and_then(Value::as_u64).unwrap_or(2) as usize,
        eps: raw.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12) as f32,
        act,
    };
    if d.heads == 0 || !d.hidden.is_multiple_of(d.heads) {
        return Err(model_error(
            config_path,
            format!("hidden_size {} is not a multiple of num_attention_heads {}", d.hidden, d.heads),
        ));
    }
    Ok(d)
}

/// Takes tensors out of the checkpoint by name, converting to f32 and checking shapes.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    path: &'a Path,
    kernel: Kernel,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| {
            model_error(self.path, format!("weights do not match config.json: missing tensor {name:?}"))
        })?;
        if t.dims() != shape {
            return Err(model_error(
                self.path,
                format!(
                    "weights do not match config.json: tensor {name:?} has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }

    /// A layer norm saved as `weight`/`bias` or, in older checkpoints, `gamma`/`beta`.
    fn norm(&self, prefix: &str, width: usize) -> Result<Norm> {
        let (g, b) = if self.tensors.contains_key(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.{g}"), &[width])?,
            beta: self.get(&format!("{prefix}.{b}"), &[width])?,
        })
    }

    /// Linear layers saved `[out, in]` (PyTorch), concatenated along `out` and transposed.
    fn linear(&self, prefixes: &[String], inp: usize, out_each: usize) -> Result<Linear> {
        let out = out_each * prefixes.len();
        let mut w = vec![0f32; inp * out];
        let mut b = Vec::with_capacity(out);
        for (p, prefix) in prefixes.iter().enumerate() {
            let wp = self.get(&format!("{prefix}.weight"), &[out_each, inp])?;
            for o in 0..out_each {
                for i in 0..inp {
                    w[i * out + p * out_each + o] = wp[o * inp + i];
                }
            }
            b.extend(self.get(&format!("{prefix}.bias"), &[out_each])?);
        }
        let w = match self.kernel {
            Kernel::General => Dense::Plain(w),
            Kernel::F32 => {
                let mut packed = PackedMat::default();
                packed.repack_panels(inp, out, |r, c| w[r * out + c]);
                Dense::F32(packed)
            }
            Kernel::Bf16 => Dense::Bf16(PackedB::pack(&w, inp, out)),
        };
        Ok(Linear { w, b, inp, out })
    }
}

impl Bert {
    /// What runs the dense and attention products, in words.
    pub(crate) fn kernel_name(&self) -> &'static str {
        match self.kernel {
            Kernel::General => "f32 (gemm)",
            Kernel::F32 => "f32 (AVX-512 panels)",
            Kernel::Bf16 => bf16::kernel_name(),
        }
    }

    /// Loads the encoder from `config.json`'s fields and tensors named as in `BertModel`
    /// (`embeddings.*`, `encoder.layer.N.*`; any `bert.` prefix already stripped). With
    /// `use_bf16` (and a CPU that has AVX-512 BF16) the dense layers run in bf16.
    pub(crate) fn load(
        config_path: &Path,
        raw: &Value,
        weights_path: &Path,
        tensors: &HashMap<String, Tensor>,
        use_bf16: bool,
    ) -> Result<Bert> {
        let d = dims(config_path, raw)?;
        let kernel = if use_bf16 && bf16::available() {
            Kernel::Bf16
        } else if packed::use_avx512() && std::env::var("COLBERT_F32_KERNEL").as_deref() != Ok("general") {
            Kernel::F32
        } else {
            Kernel::General
        };
        let w = Weights { tensors, path: weights_path, kernel };
        let h = d.hidden;
        let mut layers = Vec::with_capacity(d.layers);
        for l in 0..d.layers {
            let p = format!("encoder.layer.{l}");
            let qkv_names: Vec<String> =
                ["query", "key", "value"].iter().map(|n| format!("{p}.attention.self.{n}")).collect();
            layers.push(Layer {
                qkv: w.linear(&qkv_names, h, h)?,
                attn_out: w.linear(&[format!("{p}.attention.output.dense")], h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                ffn_in: w.linear(&[format!("{p}.intermediate.dense")], h, d.intermediate)?,
                ffn_out: w.linear(&[format!("{p}.output.dense")], d.intermediate, h)?,
                ffn_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Bert {
            word: w.get("embeddings.word_embeddings.weight", &[d.vocab, h])?,
            position: w.get("embeddings.position_embeddings.weight", &[d.max_positions, h])?,
            token_type: w.get("embeddings.token_type_embeddings.weight", &[d.type_vocab, h])?,
            emb_norm: w.norm("embeddings.LayerNorm", h)?,
            layers,
            hidden: h,
            heads: d.heads,
            vocab: d.vocab,
            max_positions: d.max_positions,
            type_vocab: d.type_vocab,
            eps: d.eps,
            act: d.act,
            kernel,
        })
    }

    /// Hidden size.
    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder on `n` sequences of `len` tokens (`ids`, `type_ids` and `mask` are
    /// `n × len` row-major; `type_ids` `None` means all 0) on the calling thread and returns the
    /// last hidden states, `n × len × hidden`.
    pub(crate) fn forward(
        &self,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        mask: &[u32],
        n: usize,
        len: usize,
    ) -> Result<Vec<f32>> {
        let tokens = n * len;
        if ids.len() != tokens || mask.len() != tokens || type_ids.is_some_and(|t| t.len() != tokens) {
            return Err(crate::error::EngineError::InvalidArgument(format!(
                "BERT input of {n} × {len} tokens with {} ids, {} mask entries",
                ids.len(),
                mask.len()
            )));
        }
        if len > self.max_positions {
            return Err(crate::error::EngineError::InvalidArgument(format!(
                "sequence of {len} tokens exceeds the model's {} positions",
                self.max_positions
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(crate::error::EngineError::InvalidArgument(format!(
                "token id {bad} outside the vocabulary of {}",
                self.vocab
            )));
        }
        if let Some(&bad) = type_ids.and_then(|t| t.iter().find(|&&t| t as usize >= self.type_vocab)) {
            return Err(crate::error::EngineError::InvalidArgument(format!(
                "token type {bad} outside the model's {} types",
                self.type_vocab
            )));
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            Ok(self.run(&mut s, ids, type_ids, mask, n, len))
        })
    }

    fn run(
        &self,
        s: &mut Scratch,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        mask: &[u32],
        n: usize,
        len: usize,
    ) -> Vec<f32> {
        let h = self.hidden;
        let tokens = n * len;
        let mut x = vec![0f32; tokens * h];
        for (t, row) in x.chunks_exact_mut(h).enumerate() {
            let id = ids[t] as usize;
            let ty = type_ids.map_or(0, |ts| ts[t] as usize);
            let pos = t % len;
            let (w, p, y) =
                (&self.word[id * h..][..h], &self.position[pos * h..][..h], &self.token_type[ty * h..][..h]);
            for (((o, a), b), c) in row.iter_mut().zip(w).zip(p).zip(y) {
                *o = a + b + c;
            }
        }
        ops::layer_norm(&mut x, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);
        // Each layer one sequence at a time: a sequence's `Q | K | V` and feed-forward
        // intermediates (3h and 4h wide) stay in cache between the steps, where a whole batch's
        // are tens of MB. Rows are independent in every step, so the result is the same.
        for layer in &self.layers {
            for (xs, m) in x.chunks_exact_mut(len * h).zip(mask.chunks_exact(len)) {
                self.layer(layer, s, xs, m, len);
            }
        }
        x
    }

    /// One layer over one sequence of `len` tokens (`x`: `[len, h]`, `mask`: `[len]`).
    fn layer(&self, layer: &Layer, s: &mut Scratch, x: &mut [f32], mask: &[u32], len: usize) {
        let h = self.hidden;
        let head_dim = h / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();

        let Scratch { qkv, ctx, scores, inter, kt16, vp16, kt32, vp32 } = s;
        // Q | K | V for every token: [len, 3h].
        let qkv = grow(qkv, len * 3 * h);
        linear(&layer.qkv, x, qkv, len, false);
        ops::bias_act(qkv, &layer.qkv.b, None);

        // Attention per head, written into ctx: [len, h]. The two products run on
        // the dense layers' kernel; the packed ones take Kᵀ (scaled) and V packed per head.
        let ctx = grow(ctx, len * h);
        // Masked keys get probability exactly 0, so keys after the last unmasked one (the
        // batch's padding) are skipped; a row with every key masked stays uniform over all.
        let keys = mask.iter().rposition(|&m| m != 0).map_or(len, |i| i + 1);
        let key_mask = &mask[..keys];
        let scores = grow(scores, len * keys);
        for head in 0..self.heads {
            let (qo, ko, vo) = (head * head_dim, h + head * head_dim, 2 * h + head * head_dim);
            let out = &mut ctx[head * head_dim..];
            let k_at = |r: usize, c: usize| qkv[ko + c * 3 * h + r] * scale;
            let v_at = |r: usize, c: usize| qkv[vo + r * 3 * h + c];
            match self.kernel {
                Kernel::Bf16 => {
                    kt16.repack_transposed(&qkv[ko..], 3 * h, keys, head_dim, scale);
                    bf16::matmul_strided(&qkv[qo..], 3 * h, len, kt16, scores, keys, false);
                    ops::masked_softmax(scores, key_mask);
                    vp16.repack_rows(&qkv[vo..], 3 * h, keys, head_dim);
                    bf16::matmul_strided(scores, keys, len, vp16, out, h, false);
                }
                Kernel::F32 => {
                    kt32.repack_panels(head_dim, keys, k_at);
                    packed::matmul_panels(&qkv[qo..], 3 * h, len, kt32, scores, keys, false);
                    ops::masked_softmax(scores, key_mask);
                    vp32.repack_panels(keys, head_dim, v_at);
                    packed::matmul_panels(scores, keys, len, vp32, out, h, false);
                }
                Kernel::General => {
                    let q = Mat::view(qkv, qo, len, head_dim, 3 * h, 1);
                    let k = Mat::view(qkv, ko, keys, head_dim, 3 * h, 1);
                    let v = Mat::view(qkv, vo, keys, head_dim, 3 * h, 1);
                    ops::matmul(q, k.t(), scores, keys, false, scale);
                    ops::masked_softmax(scores, key_mask);
                    ops::matmul(Mat::dense(scores, len, keys), v, out, h, false, 1.0);
                }
            }
        }

        // x = LayerNorm(x + ctx·Wo + bo)
        linear(&layer.attn_out, ctx, x, len, true);
        ops::bias_act(x, &layer.attn_out.b, None);
        ops::layer_norm(x, &layer.attn_norm.gamma, &layer.attn_norm.beta, self.eps);

        // x = LayerNorm(x + act(x·Wi + bi)·Wo2 + bo2)
        let inter = grow(inter, len * layer.ffn_in.out);
        linear(&layer.ffn_in, x, inter, len, false);
        ops::bias_act(inter, &layer.ffn_in.b, Some(self.act));
        linear(&layer.ffn_out, inter, x, len, true);
        ops::bias_act(x, &layer.ffn_out.b, None);
        ops::layer_norm(x, &layer.ffn_norm.gamma, &layer.ffn_norm.beta, self.eps);
    }
}

/// `out (+)= xs · W` for `rows` rows (bias not added).
fn linear(l: &Linear, xs: &[f32], out: &mut [f32], rows: usize, accumulate: bool) {
    let (xs, out) = (&xs[..rows * l.inp], &mut out[..rows * l.out]);
    match &l.w {
        Dense::Bf16(p) => bf16::matmul(xs, rows, p, out, accumulate),
        Dense::F32(p) => packed::matmul_panels(xs, l.inp, rows, p, out, l.out, accumulate),
        Dense::Plain(w) => {
            ops::matmul(Mat::dense(xs, rows, l.inp), Mat::dense(w, l.inp, l.out), out, l.out, accumulate, 1.0)
        }
    }
}

/// Per-thread intermediates, grown to the largest batch seen and then reused.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    scores: Vec<f32>,
    inter: Vec<f32>,
    /// One head's `Kᵀ` (scaled) and `V`, packed for the bf16 kernel...
    kt16: PackedB,
    vp16: PackedB,
    /// ... or for the f32 one.
    kt32: PackedMat,
    vp32: PackedMat,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}
