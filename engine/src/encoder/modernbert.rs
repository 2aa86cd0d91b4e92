//! ModernBERT's forward pass (GTE-ModernColBERT's backbone), on the same kernels and in the same
//! organisation as [`super::bert`]: one batch per thread, each layer one sequence at a time,
//! per-thread scratch buffers.
//!
//! The arithmetic is the one of `transformers`' `ModernBertModel`: token embeddings and a layer
//! norm (no positions); pre-norm layers (the first without an attention norm) of fused `Wqkv`,
//! rotary position embeddings on queries and keys, attention over every key in global layers and
//! over keys within `local_attention / 2` positions in local ones, `Wo`, then a gated feed-forward
//! (`Wi` gives `[input | gate]`, `act(input) · gate`, `Wo`); a final layer norm. Layer norms and
//! dense layers have no bias unless the config says so. Padding is masked, not removed: a padded
//! key gets probability 0, which is what unpadding gives.

use std::cell::RefCell;
use std::path::Path;

use serde_json::Value;

use super::checkpoint::Checkpoint;
use super::config::model_error;
use super::layers::{
    self, linear, linear_strided, AttentionScratch, Kernel, Linear, Norm, Span, Threads, Weights,
};
use crate::error::Result;
use kernels::ops::{self, grow, Act};

struct Layer {
    /// `None` in the first layer (its input is the normalised embeddings already).
    attn_norm: Option<Norm>,
    qkv: Linear,
    attn_out: Linear,
    mlp_norm: Norm,
    /// `[input | gate]`, `2 × intermediate` wide.
    wi: Linear,
    wo: Linear,
    span: Span,
    /// Which rotary table this layer's positions use: 0 global, 1 local.
    rope: usize,
}

/// Rotary position embedding: `cos` and `sin` of `position × inv_freq[i]`, `[positions, half]`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    /// Tables for `positions` positions of a head `head_dim` wide with base `theta`, computed as
    /// `transformers` does (inverse frequencies and angles in f32).
    fn new(theta: f64, head_dim: usize, positions: usize) -> Rope {
        let half = head_dim / 2;
        let inv: Vec<f32> =
            (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rope { cos, sin, half }
    }

    /// Rotates one head's vector at `position`: `x·cos + rotate_half(x)·sin`, where
    /// `rotate_half([a, b]) = [-b, a]` over the two halves.
    #[inline]
    fn rotate(&self, x: &mut [f32], position: usize) {
        let half = self.half;
        let (cos, sin) = (&self.cos[position * half..][..half], &self.sin[position * half..][..half]);
        let (a, b) = x[..2 * half].split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

/// A ModernBERT encoder (embeddings, layers and the final norm; no head).
pub(crate) struct ModernBert {
    word: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    ropes: [Rope; 2],
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
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
    eps: f32,
    act: Act,
    norm_bias: bool,
    attention_bias: bool,
    mlp_bias: bool,
    /// Whether each layer attends globally.
    global: Vec<bool>,
    /// Half the local attention window.
    window: usize,
    theta_global: f64,
    theta_local: f64,
}

fn dims(config_path: &Path, raw: &Value) -> Result<Dims> {
    let bad = |msg: String| model_error(config_path, msg);
    let int = |k: &str| {
        raw.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("missing or non-integer {k:?}")))
    };
    let flag = |k: &str| raw.get(k).and_then(Value::as_bool).unwrap_or(false);
    let act = match raw.get("hidden_activation").and_then(Value::as_str).unwrap_or("gelu") {
        "gelu" => Act::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_approximate" | "gelu_fast" => Act::GeluTanh,
        "relu" => Act::Relu,
        other => return Err(bad(format!("unsupported hidden_activation {other:?}"))),
    };
    let layers = int("num_hidden_layers")?;
    // Transformers 5 lists each layer's kind; earlier configs give the period of global layers.
    let global = match raw.get("layer_types").and_then(Value::as_array) {
        Some(types) => {
            let kinds = types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(true),
                    Some("sliding_attention") => Ok(false),
                    _ => Err(bad(format!("unsupported layer type {t} in \"layer_types\""))),
                })
                .collect::<Result<Vec<bool>>>()?;
            if kinds.len() != layers {
                return Err(bad(format!(
                    "\"layer_types\" lists {} layers but num_hidden_layers is {layers}",
                    kinds.len()
                )));
            }
            kinds
        }
        None => {
            let every =
                raw.get("global_attn_every_n_layers").and_then(Value::as_u64).unwrap_or(3).max(1) as usize;
            (0..layers).map(|l| l % every == 0).collect()
        }
    };
    // RoPE bases: `rope_parameters.{full,sliding}_attention.rope_theta` (transformers 5) or
    // `global_rope_theta` / `local_rope_theta` (earlier); only the default (unscaled) kind.
    let theta = |kind: &str, old_key: &str, default: f64| -> Result<f64> {
        if let Some(params) = raw.pointer(&format!("/rope_parameters/{kind}")) {
            let rope_type = params.get("rope_type").and_then(Value::as_str).unwrap_or("default");
            if rope_type != "default" {
                return Err(bad(format!("unsupported rope_type {rope_type:?} for {kind}: only \"default\"")));
            }
            if let Some(t) = params.get("rope_theta").and_then(Value::as_f64) {
                return Ok(t);
            }
        }
        Ok(raw.get(old_key).and_then(Value::as_f64).unwrap_or(default))
    };
    if raw.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(bad("unsupported \"rope_scaling\": only unscaled rotary embeddings".to_string()));
    }
    let d = Dims {
        hidden: int("hidden_size")?,
        heads: int("num_attention_heads")?,
        layers,
        intermediate: int("intermediate_size")?,
        vocab: int("vocab_size")?,
        max_positions: int("max_position_embeddings")?,
        eps: raw.get("norm_eps").or_else(|| raw.get("layer_norm_eps")).and_then(Value::as_f64).unwrap_or(1e-5)
            as f32,
        act,
        norm_bias: flag("norm_bias"),
        attention_bias: flag("attention_bias"),
        mlp_bias: flag("mlp_bias"),
        global,
        window: raw.get("local_attention").and_then(Value::as_u64).unwrap_or(128) as usize / 2,
        theta_global: theta("full_attention", "global_rope_theta", 160_000.0)?,
        theta_local: theta("sliding_attention", "local_rope_theta", 10_000.0)?,
    };
    if d.heads == 0 || !d.hidden.is_multiple_of(d.heads) || !(d.hidden / d.heads).is_multiple_of(2) {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {} with an even head size",
            d.hidden, d.heads
        )));
    }
    Ok(d)
}

impl ModernBert {
    /// What runs the dense and attention products, in words.
    pub(crate) fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }

    /// Hidden size.
    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    /// Loads the encoder from `config.json`'s fields and tensors named as in `ModernBertModel`
    /// (`embeddings.*`, `layers.N.*`, `final_norm.*`; any `model.` prefix already stripped).
    /// `kernel` runs the products (chosen from the caller's kernels and precision).
    pub(crate) fn load(
        config_path: &Path,
        raw: &Value,
        checkpoint: &Checkpoint,
        kernel: Kernel,
    ) -> Result<ModernBert> {
        let d = dims(config_path, raw)?;
        let w = Weights { checkpoint, kernel };
        let h = d.hidden;
        // Layers are packed in parallel (most of a load); the first bad one, in order, is reported.
        let layer = |l: usize| -> Result<Layer> {
            let (p, global) = (format!("layers.{l}"), d.global[l]);
            let attn_norm =
                if l == 0 { None } else { Some(w.norm(&format!("{p}.attn_norm"), h, d.norm_bias)?) };
            Ok(Layer {
                attn_norm,
                qkv: w.linear(&[format!("{p}.attn.Wqkv")], h, 3 * h, d.attention_bias)?,
                attn_out: w.linear(&[format!("{p}.attn.Wo")], h, h, d.attention_bias)?,
                mlp_norm: w.norm(&format!("{p}.mlp_norm"), h, d.norm_bias)?,
                wi: w.linear(&[format!("{p}.mlp.Wi")], h, 2 * d.intermediate, d.mlp_bias)?,
                wo: w.linear(&[format!("{p}.mlp.Wo")], d.intermediate, h, d.mlp_bias)?,
                span: if global { Span::All } else { Span::Window(d.window) },
                rope: usize::from(!global),
            })
        };
        let layers = layers::load_in_parallel(d.layers, layer)?;
        let head_dim = h / d.heads;
        Ok(ModernBert {
            word: w.get("embeddings.tok_embeddings.weight", &[d.vocab, h])?.into_owned(),
            emb_norm: w.norm("embeddings.norm", h, d.norm_bias)?,
            layers,
            final_norm: w.norm("final_norm", h, d.norm_bias)?,
            ropes: [
                Rope::new(d.theta_global, head_dim, d.max_positions),
                Rope::new(d.theta_local, head_dim, d.max_positions),
            ],
            hidden: h,
            heads: d.heads,
            vocab: d.vocab,
            max_positions: d.max_positions,
            eps: d.eps,
            act: d.act,
            kernel,
        })
    }

    /// Runs the encoder on `n` sequences of `len` tokens (`ids` and `mask` are `n × len`
    /// row-major) on the calling thread and returns the last hidden states, `n × len × hidden`.
    /// With [`Threads::Two`] the large products are split with one more thread.
    pub(crate) fn forward(
        &self,
        ids: &[u32],
        mask: &[u32],
        n: usize,
        len: usize,
        threads: Threads,
    ) -> Result<Vec<f32>> {
        let limits = (self.vocab, 1, self.max_positions);
        layers::check_input("ModernBERT", (ids, None, mask), (n, len), limits)?;
        let h = self.hidden;
        let mut x = vec![0f32; n * len * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            row.copy_from_slice(&self.word[id as usize * h..][..h]);
        }
        self.emb_norm.apply(&mut x, self.eps);
        let mut run = |s: &mut Scratch| {
            // Each layer one sequence at a time, as in BERT: a sequence's intermediates stay in
            // cache between the steps.
            for layer in &self.layers {
                for (xs, m) in x.chunks_exact_mut(len * h).zip(mask.chunks_exact(len)) {
                    self.layer(layer, s, xs, m, len, threads);
                }
            }
        };
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => run(&mut s),
            // Re-entered on this thread (rayon ran another forward pass here while this one waited
            // on a split product): fresh buffers.
            Err(_) => run(&mut Scratch::default()),
        });
        self.final_norm.apply(&mut x, self.eps);
        Ok(x)
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
        let Scratch { normed, qkv, ctx, inter, attention } = s;
        let normed = grow(normed, len * h);

        // x += Wo · attention(rope(Wqkv · norm(x)))
        let qkv = grow(qkv, len * 3 * h);
        match &layer.attn_norm {
            Some(norm) => {
                normed.copy_from_slice(x);
                norm.apply(normed, self.eps);
                linear(&layer.qkv, normed, qkv, len, false, threads);
            }
            None => linear(&layer.qkv, x, qkv, len, false, threads),
        }
        layer.qkv.add_bias(qkv);
        let rope = &self.ropes[layer.rope];
        let head_dim = h / self.heads;
        for (t, row) in qkv.chunks_exact_mut(3 * h).enumerate() {
            // Queries and keys: the first 2h of the row, one head after another.
            for head in row[..2 * h].chunks_exact_mut(head_dim) {
                rope.rotate(head, t);
            }
        }
        let ctx = grow(ctx, len * h);
        layers::attention(self.kernel, attention, qkv, ctx, mask, len, h, self.heads, layer.span);
        linear(&layer.attn_out, ctx, x, len, true, threads);
        layer.attn_out.add_bias(x);

        // x += Wo · (act(input) · gate), [input | gate] = Wi · norm(x)
        normed.copy_from_slice(x);
        layer.mlp_norm.apply(normed, self.eps);
        let inter = grow(inter, len * layer.wi.out);
        linear(&layer.wi, normed, inter, len, false, threads);
        layer.wi.add_bias(inter);
        ops::gated_act(inter, layer.wo.inp, self.act);
        linear_strided(&layer.wo, inter, layer.wi.out, x, len, true, threads);
        layer.wo.add_bias(x);
    }
}

/// Per-thread intermediates, grown to the largest batch seen and then reused.
#[derive(Default)]
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
    attention: AttentionScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}
