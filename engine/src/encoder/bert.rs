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
use std::path::Path;

use serde_json::Value;

use super::checkpoint::Checkpoint;
use super::config::model_error;
use super::layers::{self, linear, AttentionScratch, Kernel, Linear, Norm, Span, Threads, Weights};
use crate::error::Result;
use kernels::ops::{self, grow, Act};

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

impl Bert {
    /// What runs the dense and attention products, in words.
    pub(crate) fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }

    /// Loads the encoder from `config.json`'s fields and tensors named as in `BertModel`
    /// (`embeddings.*`, `encoder.layer.N.*`; any `bert.` prefix already stripped).
    /// `kernel` runs the dense layers (chosen from the caller's kernels and precision).
    pub(crate) fn load(
        config_path: &Path,
        raw: &Value,
        checkpoint: &Checkpoint,
        kernel: Kernel,
    ) -> Result<Bert> {
        let d = dims(config_path, raw)?;
        let w = Weights { checkpoint, kernel };
        let h = d.hidden;
        // Layers are packed in parallel (most of a load); the first bad one, in order, is reported.
        let layer = |l: usize| -> Result<Layer> {
            let p = format!("encoder.layer.{l}");
            let qkv_names: Vec<String> =
                ["query", "key", "value"].iter().map(|n| format!("{p}.attention.self.{n}")).collect();
            Ok(Layer {
                qkv: w.linear(&qkv_names, h, h, true)?,
                attn_out: w.linear(&[format!("{p}.attention.output.dense")], h, h, true)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, true)?,
                ffn_in: w.linear(&[format!("{p}.intermediate.dense")], h, d.intermediate, true)?,
                ffn_out: w.linear(&[format!("{p}.output.dense")], d.intermediate, h, true)?,
                ffn_norm: w.norm(&format!("{p}.output.LayerNorm"), h, true)?,
            })
        };
        let layers = layers::load_in_parallel(d.layers, layer)?;
        Ok(Bert {
            word: w.get("embeddings.word_embeddings.weight", &[d.vocab, h])?.into_owned(),
            position: w.get("embeddings.position_embeddings.weight", &[d.max_positions, h])?.into_owned(),
            token_type: w.get("embeddings.token_type_embeddings.weight", &[d.type_vocab, h])?.into_owned(),
            emb_norm: w.norm("embeddings.LayerNorm", h, true)?,
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
    /// last hidden states, `n × len × hidden`. With [`Threads::Two`] the large products are
    /// split with one more thread.
    pub(crate) fn forward(
        &self,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        mask: &[u32],
        n: usize,
        len: usize,
        threads: Threads,
    ) -> Result<Vec<f32>> {
        let limits = (self.vocab, self.type_vocab, self.max_positions);
        layers::check_input("BERT", (ids, type_ids, mask), (n, len), limits)?;
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => Ok(self.run(&mut s, ids, type_ids, mask, n, len, threads)),
            // Re-entered on this thread (rayon ran another forward pass here while this one waited
            // on a split product): fresh buffers.
            Err(_) => Ok(self.run(&mut Scratch::default(), ids, type_ids, mask, n, len, threads)),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        s: &mut Scratch,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        mask: &[u32],
        n: usize,
        len: usize,
        threads: Threads,
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
        self.emb_norm.apply(&mut x, self.eps);
        // Each layer one sequence at a time: a sequence's `Q | K | V` and feed-forward
        // intermediates (3h and 4h wide) stay in cache between the steps, where a whole batch's
        // are tens of MB. Rows are independent in every step, so the result is the same.
        for layer in &self.layers {
            for (xs, m) in x.chunks_exact_mut(len * h).zip(mask.chunks_exact(len)) {
                self.layer(layer, s, xs, m, len, threads);
            }
        }
        x
    }

    /// One layer over one sequence of `len` tokens (`x`: `[len, h]`, `mask`: `[len]`).
    fn layer(
        &self,
        layer: &Layer,
        s: &mut Scratch,
        x: &mut [f32],
        mask: &[u32],
        len: usize,
        threads: Threads,
    ) {
        let h = self.hidden;
        let Scratch { qkv, ctx, inter, attention } = s;
        // Q | K | V for every token: [len, 3h].
        let qkv = grow(qkv, len * 3 * h);
        linear(&layer.qkv, x, qkv, len, false, threads);
        layer.qkv.add_bias(qkv);

        // Attention per head, written into ctx: [len, h].
        let ctx = grow(ctx, len * h);
        layers::attention(self.kernel, attention, qkv, ctx, mask, len, h, self.heads, Span::All);

        // x = LayerNorm(x + ctx·Wo + bo)
        linear(&layer.attn_out, ctx, x, len, true, threads);
        layer.attn_out.add_bias(x);
        layer.attn_norm.apply(x, self.eps);

        // x = LayerNorm(x + act(x·Wi + bi)·Wo2 + bo2)
        let inter = grow(inter, len * layer.ffn_in.out);
        linear(&layer.ffn_in, x, inter, len, false, threads);
        ops::bias_act(inter, &layer.ffn_in.b, Some(self.act));
        linear(&layer.ffn_out, inter, x, len, true, threads);
        layer.ffn_out.add_bias(x);
        layer.ffn_norm.apply(x, self.eps);
    }
}

/// Per-thread intermediates, grown to the largest batch seen and then reused.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
    attention: AttentionScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}
