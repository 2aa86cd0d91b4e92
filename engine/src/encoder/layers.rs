//! The pieces our transformer forward passes ([`super::bert`], [`super::modernbert`]) share: dense
//! layers stored in the form their kernel reads, layer norms, checkpoint loading with shape checks,
//! multi-head self-attention over one sequence, and per-thread scratch buffers.
//!
//! Weights are converted to f32 once at load and stored input-major (`[in, out]`), then packed for
//! the kernel chosen at load ([`Kernel`]).

use std::borrow::Cow;

use super::checkpoint::Checkpoint;
use super::config::model_error;
use crate::error::Result;
use kernels::bf16::{self, PackedB};
use kernels::cpu::{Bf16Dense, F32Dense, Kernels, Precision};
use kernels::ops::{self, grow, Mat};
use kernels::packed::{self, PackedMat};

/// A dense layer, `y = x·W + b` (`b` empty when the layer has no bias).
pub(super) struct Linear {
    w: Dense,
    pub b: Vec<f32>,
    pub inp: usize,
    pub out: usize,
}

impl Linear {
    /// Adds the bias (if any) to every row of `ys` (rows `out` wide).
    pub fn add_bias(&self, ys: &mut [f32]) {
        if !self.b.is_empty() {
            ops::bias_act(ys, &self.b, None);
        }
    }
}

/// A dense layer's `W` (`[in, out]`) in the form its kernel reads.
enum Dense {
    /// Row-major, for the general f32 product (CPUs without AVX-512).
    Plain(Vec<f32>),
    /// Panels for the AVX-512 f32 kernel.
    F32(PackedMat),
    /// bf16 pairs for the bf16 kernel, when the encoder runs in bf16.
    Bf16(PackedB, Bf16Dense),
}

/// Which kernels the encoder's products run on, chosen once at load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kernel {
    /// The general f32 product (`gemm`).
    General,
    /// The packed AVX-512 f32 kernel.
    F32,
    /// A packed bf16 kernel.
    Bf16(Bf16Dense),
}

impl Kernel {
    /// bf16 where `precision` runs bf16 on these kernels, else the packed f32 kernel where they
    /// have it, else the general product: from the caller's choice and CPU features alone.
    pub fn choose(kernels: &Kernels, precision: Precision) -> Kernel {
        match (kernels.runs_bf16(precision), kernels.bf16_dense, kernels.f32_dense) {
            (true, Some(bf16), _) => Kernel::Bf16(bf16),
            (_, _, F32Dense::Avx512Panels) => Kernel::F32,
            _ => Kernel::General,
        }
    }

    /// What runs the products, in words.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::General => "f32 (gemm)",
            Kernel::F32 => "f32 (AVX-512 panels)",
            Kernel::Bf16(Bf16Dense::Avx512) => "bf16 (AVX-512 BF16)",
            Kernel::Bf16(Bf16Dense::Amx) => "bf16 (AMX tiles)",
        }
    }
}

/// Layer-norm parameters (`beta` all zeros for norms saved without a bias).
pub(super) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl Norm {
    /// Normalises every row of `rows` in place.
    pub fn apply(&self, rows: &mut [f32], eps: f32) {
        ops::layer_norm(rows, &self.gamma, &self.beta, eps);
    }
}

/// Takes tensors out of the checkpoint by name, converting to f32 and checking shapes.
pub(super) struct Weights<'a> {
    pub checkpoint: &'a Checkpoint,
    pub kernel: Kernel,
}

impl<'a> Weights<'a> {
    /// The tensor `name`, which must have `shape`, as f32.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Cow<'a, [f32]>> {
        let path = self.checkpoint.path();
        let missing =
            || model_error(path, format!("weights do not match config.json: missing tensor {name:?}"));
        let found = self.checkpoint.shape(name).ok_or_else(missing)?;
        if found != shape {
            return Err(model_error(
                path,
                format!("weights do not match config.json: tensor {name:?} has shape {found:?}, expected {shape:?}"),
            ));
        }
        self.checkpoint.f32(name)?.ok_or_else(missing)
    }

    /// A layer norm saved as `weight`/`bias` or, in older checkpoints, `gamma`/`beta`; with
    /// `bias` false, only a `weight` (the bias is zero).
    pub fn norm(&self, prefix: &str, width: usize, bias: bool) -> Result<Norm> {
        let (g, b) = if self.checkpoint.contains(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.{g}"), &[width])?.into_owned(),
            beta: if bias {
                self.get(&format!("{prefix}.{b}"), &[width])?.into_owned()
            } else {
                vec![0.0; width]
            },
        })
    }

    /// Linear layers saved `[out, in]` (PyTorch), concatenated along `out` and transposed; with
    /// `bias` false they have no bias tensors. The packed kernels' layouts are written straight
    /// from the saved tensors (no transposed copy of a whole layer).
    pub fn linear(&self, prefixes: &[String], inp: usize, out_each: usize, bias: bool) -> Result<Linear> {
        let out = out_each * prefixes.len();
        let mut parts = Vec::with_capacity(prefixes.len());
        let mut b = Vec::with_capacity(if bias { out } else { 0 });
        for prefix in prefixes {
            parts.push(self.get(&format!("{prefix}.weight"), &[out_each, inp])?);
            if bias {
                b.extend_from_slice(&self.get(&format!("{prefix}.bias"), &[out_each])?);
            }
        }
        // Element (row `i` of the input, column `c` of the output) of the transposed layer.
        let at = |i: usize, c: usize| parts[c / out_each][(c % out_each) * inp + i];
        let w = match self.kernel {
            Kernel::General => {
                // In 32 × 32 blocks: element by element, every read of a large layer would land
                // on another cache line.
                const B: usize = 32;
                let mut w = vec![0f32; inp * out];
                for c0 in (0..out).step_by(B) {
                    for i0 in (0..inp).step_by(B) {
                        for c in c0..(c0 + B).min(out) {
                            for i in i0..(i0 + B).min(inp) {
                                w[i * out + c] = at(i, c);
                            }
                        }
                    }
                }
                Dense::Plain(w)
            }
            Kernel::F32 => {
                let mut packed = PackedMat::default();
                packed.repack_panels(inp, out, at);
                Dense::F32(packed)
            }
            Kernel::Bf16(kind) => {
                let mut packed = PackedB::default();
                packed.repack(inp, out, at);
                Dense::Bf16(packed, kind)
            }
        };
        Ok(Linear { w, b, inp, out })
    }
}

/// Builds layers `0..n` with `layer`, on every thread of the pool; on failure, the error of the
/// first failing layer in order.
pub(super) fn load_in_parallel<L: Send>(
    n: usize,
    layer: impl Fn(usize) -> Result<L> + Sync,
) -> Result<Vec<L>> {
    use rayon::prelude::*;
    let built: Vec<Result<L>> = (0..n).into_par_iter().map(&layer).collect();
    built.into_iter().collect()
}

/// Output columns per packed panel, the unit the products' columns are split in (the same for
/// the f32 and bf16 kernels).
const PANEL: usize = 32;
const _: () = assert!(PANEL == packed::NR && PANEL == bf16::NR);

/// Products smaller than this many multiply-adds are not split across threads (a split costs a
/// few microseconds).
const SPLIT_MIN: usize = 1 << 20;

/// How a forward pass runs its dense products.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Threads {
    /// On the calling thread (batches run side by side, one per thread).
    One,
    /// Each large product's output columns split between the calling thread and one more (a lone
    /// batch: one query searched interactively).
    Two,
}

/// `out (+)= xs · W` for `rows` rows (bias not added); row `i` of `xs` starts at `xs[i * lda]`.
/// With [`Threads::Two`], the second half of the columns is computed on another thread in a
/// buffer of its own and copied into `out`: the same values, bit for bit.
pub(super) fn linear_strided(
    l: &Linear,
    xs: &[f32],
    lda: usize,
    out: &mut [f32],
    rows: usize,
    accumulate: bool,
    threads: Threads,
) {
    if rows == 0 {
        return;
    }
    let xs = &xs[..(rows - 1) * lda + l.inp];
    let out = &mut out[..rows * l.out];
    let panels = l.out.div_ceil(PANEL);
    if threads == Threads::One || panels < 2 || rows * l.inp * l.out < SPLIT_MIN {
        return product(l, xs, lda, rows, 0..panels, out, l.out, accumulate);
    }
    let mid = panels / 2;
    let (c0, width) = (mid * PANEL, l.out - mid * PANEL);
    let mut other = SPLIT.take();
    other.clear();
    if accumulate {
        // The columns' current values, so that the products add to them in the same order as
        // unsplit (an add afterwards would round differently where `k` runs in several passes).
        other.extend(out.chunks_exact(l.out).flat_map(|row| &row[c0..]));
    } else {
        other.resize(rows * width, 0.0);
    }
    rayon::join(
        || product(l, xs, lda, rows, 0..mid, out, l.out, accumulate),
        || product(l, xs, lda, rows, mid..panels, &mut other, width, accumulate),
    );
    for (dst, src) in out.chunks_exact_mut(l.out).zip(other.chunks_exact(width)) {
        dst[c0..].copy_from_slice(src);
    }
    SPLIT.set(other);
}

thread_local! {
    /// The second thread's columns of a split product, reused.
    static SPLIT: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `out (+)= xs · W[:, panels]` on the calling thread: the columns of `W`'s panels `panels`
/// ([`PANEL`] each), written from column 0 of `out` (row stride `ldo`).
#[allow(clippy::too_many_arguments)]
fn product(
    l: &Linear,
    xs: &[f32],
    lda: usize,
    rows: usize,
    panels: std::ops::Range<usize>,
    out: &mut [f32],
    ldo: usize,
    accumulate: bool,
) {
    match &l.w {
        Dense::Bf16(p, kind) => {
            bf16::matmul_panel_range(*kind, xs, lda, rows, p, panels, out, ldo, accumulate)
        }
        Dense::F32(p) => packed::matmul_panel_range(xs, lda, rows, p, panels, out, ldo, accumulate),
        Dense::Plain(w) => {
            let c0 = panels.start * PANEL;
            let cols = l.out.min(panels.end * PANEL) - c0;
            ops::matmul(
                Mat::view(xs, 0, rows, l.inp, lda, 1),
                Mat::view(w, c0, l.inp, cols, l.out, 1),
                out,
                ldo,
                accumulate,
                1.0,
            )
        }
    }
}

/// `out (+)= xs · W` for `rows` dense rows (bias not added).
pub(super) fn linear(
    l: &Linear,
    xs: &[f32],
    out: &mut [f32],
    rows: usize,
    accumulate: bool,
    threads: Threads,
) {
    linear_strided(l, xs, l.inp, out, rows, accumulate, threads)
}

/// Checks a forward pass's input: `n` sequences of `len` tokens (`ids`, `mask` and any
/// `type_ids` `n × len`), ids inside `vocab`, token types inside `type_vocab`, `len` within
/// `max_positions`.
pub(super) fn check_input(
    model: &str,
    (ids, type_ids, mask): (&[u32], Option<&[u32]>, &[u32]),
    (n, len): (usize, usize),
    (vocab, type_vocab, max_positions): (usize, usize, usize),
) -> Result<()> {
    let tokens = n * len;
    let invalid = |msg: String| Err(crate::error::EngineError::InvalidArgument(msg));
    if ids.len() != tokens || mask.len() != tokens || type_ids.is_some_and(|t| t.len() != tokens) {
        return invalid(format!(
            "{model} input of {n} × {len} tokens with {} ids, {} mask entries",
            ids.len(),
            mask.len()
        ));
    }
    if len > max_positions {
        return invalid(format!("sequence of {len} tokens exceeds the model's {max_positions} positions"));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return invalid(format!("token id {bad} outside the vocabulary of {vocab}"));
    }
    if let Some(&bad) = type_ids.and_then(|t| t.iter().find(|&&t| t as usize >= type_vocab)) {
        return invalid(format!("token type {bad} outside the model's {type_vocab} types"));
    }
    Ok(())
}

/// Which keys each query of a sequence sees, besides the padding mask.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Span {
    /// Every key (global attention).
    All,
    /// Keys within this distance of the query, both sides included (ModernBERT's local layers).
    Window(usize),
}

/// Buffers one attention call reuses: the scores and one head's packed `Kᵀ` and `V`.
#[derive(Default)]
pub(super) struct AttentionScratch {
    scores: Vec<f32>,
    /// One head's `Kᵀ` (scaled) and `V`, packed for the bf16 kernel...
    kt16: PackedB,
    vp16: PackedB,
    /// ... or for the f32 one.
    kt32: PackedMat,
    vp32: PackedMat,
}

/// Multi-head self-attention over one sequence of `len` tokens: `qkv` holds `Q | K | V` per
/// token (`[len, 3h]`, heads contiguous within each), `ctx` (`[len, h]`) receives every head's
/// `softmax(Q·Kᵀ·scale) · V`. Keys whose `mask` is 0 get probability exactly 0, so keys after the
/// last unmasked one (the batch's padding) are skipped; a row with every key masked stays uniform
/// over all of them (what PyTorch's additive mask gives). The two products run on `kernel`.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    kernel: Kernel,
    s: &mut AttentionScratch,
    qkv: &[f32],
    ctx: &mut [f32],
    mask: &[u32],
    len: usize,
    h: usize,
    heads: usize,
    span: Span,
) {
    let head_dim = h / heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let AttentionScratch { scores, kt16, vp16, kt32, vp32 } = s;
    let mut keys = mask.iter().rposition(|&m| m != 0).map_or(len, |i| i + 1);
    if let Span::Window(w) = span {
        if has_blind_row(mask, w) {
            // Such a row attends uniformly to every key, padding included (see below).
            keys = len;
        }
    }
    let key_mask = &mask[..keys];
    let scores = grow(scores, len * keys);
    let softmax = |scores: &mut [f32]| match span {
        Span::All => ops::masked_softmax(scores, key_mask),
        Span::Window(w) => windowed_softmax(scores, key_mask, w),
    };
    for head in 0..heads {
        let (qo, ko, vo) = (head * head_dim, h + head * head_dim, 2 * h + head * head_dim);
        let out = &mut ctx[head * head_dim..];
        let k_at = |r: usize, c: usize| qkv[ko + c * 3 * h + r] * scale;
        let v_at = |r: usize, c: usize| qkv[vo + r * 3 * h + c];
        match kernel {
            Kernel::Bf16(kind) => {
                kt16.repack_transposed(&qkv[ko..], 3 * h, keys, head_dim, scale);
                bf16::matmul_strided(kind, &qkv[qo..], 3 * h, len, kt16, scores, keys, false);
                softmax(scores);
                vp16.repack_rows(&qkv[vo..], 3 * h, keys, head_dim);
                bf16::matmul_strided(kind, scores, keys, len, vp16, out, h, false);
            }
            Kernel::F32 => {
                kt32.repack_panels(head_dim, keys, k_at);
                packed::matmul_panels(&qkv[qo..], 3 * h, len, kt32, scores, keys, false);
                softmax(scores);
                vp32.repack_panels(keys, head_dim, v_at);
                packed::matmul_panels(scores, keys, len, vp32, out, h, false);
            }
            Kernel::General => {
                let q = Mat::view(qkv, qo, len, head_dim, 3 * h, 1);
                let k = Mat::view(qkv, ko, keys, head_dim, 3 * h, 1);
                let v = Mat::view(qkv, vo, keys, head_dim, 3 * h, 1);
                ops::matmul(q, k.t(), scores, keys, false, scale);
                softmax(scores);
                ops::matmul(Mat::dense(scores, len, keys), v, out, h, false, 1.0);
            }
        }
    }
}

/// Whether some query of a sequence with this `mask` has no unmasked key within `window` (an
/// unattended `[MASK]` expansion token more than `window` past a short query's last token): the
/// first unmasked key lies past `window`, the last one more than `window` before the end, or two
/// consecutive ones leave a query more than `window` from both.
fn has_blind_row(mask: &[u32], window: usize) -> bool {
    let mut prev: Option<usize> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m != 0) {
        let blind = match prev {
            None => i > window,
            Some(p) => i - p > 2 * window + 1,
        };
        if blind {
            return true;
        }
        prev = Some(i);
    }
    prev.is_none_or(|p| mask.len() - 1 - p > window)
}

/// [`ops::masked_softmax`] of each row `q` of `scores` (width `key_mask.len()`) over the keys
/// within `window` of `q`; every other key gets 0. A row whose window holds no unmasked key gets
/// a uniform row over every key, which is what PyTorch's additive mask gives (every score then
/// rounds to the same `f32::MIN`).
fn windowed_softmax(scores: &mut [f32], key_mask: &[u32], window: usize) {
    let keys = key_mask.len();
    for (q, row) in scores.chunks_exact_mut(keys).enumerate() {
        let lo = q.saturating_sub(window).min(keys);
        let hi = (q + window + 1).min(keys);
        if !key_mask[lo..hi].iter().any(|&m| m != 0) {
            row.fill(1.0 / keys as f32);
            continue;
        }
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        ops::masked_softmax(&mut row[lo..hi], &key_mask[lo..hi]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_softmax_sees_only_the_window() {
        let keys = 7usize;
        let mask = [1, 1, 0, 1, 1, 1, 1];
        let scores: Vec<f32> = (0..keys * keys).map(|i| ((i * 37 % 11) as f32) * 0.3 - 1.0).collect();
        let mut got = scores.clone();
        windowed_softmax(&mut got, &mask, 2);
        for q in 0..keys {
            // The definition: softmax over keys with |q - k| <= 2 and mask 1, in f64.
            let seen: Vec<usize> = (0..keys).filter(|&k| q.abs_diff(k) <= 2 && mask[k] == 1).collect();
            let max = seen.iter().map(|&k| scores[q * keys + k] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = seen.iter().map(|&k| (scores[q * keys + k] as f64 - max).exp()).sum();
            for k in 0..keys {
                let want =
                    if seen.contains(&k) { (scores[q * keys + k] as f64 - max).exp() / sum } else { 0.0 };
                assert!((got[q * keys + k] as f64 - want).abs() < 1e-6, "row {q} key {k}");
            }
        }
        // A query whose window holds only masked keys attends to every key alike.
        let mut blind = vec![0.5f32; 6 * 6];
        let mask = [1, 0, 0, 0, 0, 0];
        windowed_softmax(&mut blind, &mask, 2);
        assert!(blind[5 * 6..].iter().all(|&p| p == 1.0 / 6.0));
        assert_eq!(blind[..6], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(has_blind_row(&mask, 2) && !has_blind_row(&mask, 5) && !has_blind_row(&[1, 0, 0, 1], 2));
        // Against the definition, on every mask of 9 keys and windows 0..4.
        for bits in 0u32..512 {
            let mask: Vec<u32> = (0..9).map(|i| (bits >> i) & 1).collect();
            for w in 0..4usize {
                let want =
                    (0..9usize).any(|q| (q.saturating_sub(w)..(q + w + 1).min(9)).all(|k| mask[k] == 0));
                assert_eq!(has_blind_row(&mask, w), want, "mask {mask:?} window {w}");
            }
        }
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use crate::error::EngineError;

    #[test]
    fn parallel_load_keeps_order_and_reports_the_first_failure() {
        assert_eq!(load_in_parallel(40, |l| Ok(l * 2)).unwrap(), (0..40).map(|l| l * 2).collect::<Vec<_>>());
        let err = load_in_parallel(40, |l| match l {
            7 | 31 => Err(EngineError::InvalidArgument(format!("layer {l}"))),
            _ => Ok(l),
        })
        .unwrap_err();
        assert_eq!(err.to_string(), EngineError::InvalidArgument("layer 7".into()).to_string());
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    /// A `Linear` of `inp × out` deterministic weights for `kernel`, with a bias.
    fn layer(inp: usize, out: usize, kernel: Kernel) -> Linear {
        let w: Vec<f32> = (0..out * inp).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.01).collect();
        let dev = candle_core::Device::Cpu;
        let tensors = std::collections::HashMap::from([
            ("l.weight".to_string(), candle_core::Tensor::from_vec(w, (out, inp), &dev).unwrap()),
            ("l.bias".to_string(), candle_core::Tensor::from_vec(b, out, &dev).unwrap()),
        ]);
        let checkpoint = Checkpoint::from_tensors(std::path::Path::new("test"), tensors);
        let weights = Weights { checkpoint: &checkpoint, kernel };
        weights.linear(&["l".to_string()], inp, out, true).unwrap()
    }

    #[test]
    fn split_products_equal_whole_ones() {
        let mut kernels = vec![Kernel::General];
        if packed::use_avx512() {
            kernels.push(Kernel::F32);
        }
        if bf16::available() {
            kernels.push(Kernel::Bf16(Bf16Dense::Avx512));
        }
        if kernels::Features::get().amx_usable {
            kernels.push(Kernel::Bf16(Bf16Dense::Amx));
        }
        // Widths of whole and partial panels, an odd panel count, strided input rows.
        for &(rows, inp, out, lda) in &[(20, 384, 1152, 384), (13, 200, 1000, 230), (7, 768, 2310, 800)] {
            assert!(rows * inp * out >= SPLIT_MIN, "the shape must be large enough to split");
            let xs: Vec<f32> = (0..rows * lda).map(|i| ((i * 31 % 97) as f32 / 97.0) - 0.5).collect();
            for &kernel in &kernels {
                let l = layer(inp, out, kernel);
                for accumulate in [false, true] {
                    let start: Vec<f32> = (0..rows * out).map(|i| (i % 5) as f32).collect();
                    let (mut one, mut two) = (start.clone(), start);
                    linear_strided(&l, &xs, lda, &mut one, rows, accumulate, Threads::One);
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(2)
                        .build()
                        .unwrap()
                        .install(|| linear_strided(&l, &xs, lda, &mut two, rows, accumulate, Threads::Two));
                    assert!(one == two, "{kernel:?} {rows}x{inp}x{out} accumulate {accumulate}");
                }
            }
        }
    }
}
