//! The numeric kernels of the encoder's forward pass: a strided f32 matrix product
//! (the `gemm` crate's packed micro-kernels, one thread per call) and the element-wise passes —
//! bias, GELU, layer norm, masked softmax — written as plain loops the compiler vectorises.
//!
//! The element-wise passes are one source compiled three times: for the baseline target (the
//! portable fallback), with AVX2 + FMA, and with AVX-512; the [`Kernels`] table picks the build
//! ([`Elementwise`]); every build computes the same bits. `exp` and `erf` are branch-free
//! polynomial approximations (relative error of `exp` below 4e-7, absolute error of `erf` below
//! 5e-7) so that the loops vectorise; the encoder matches PyTorch within 1e-4 with them
//! (tests/encoder.rs).

use crate::cpu::{Elementwise, Kernels};

/// One matrix operand: a slice and its row and column strides in elements.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// The elements (the view starts at index 0).
    pub data: &'a [f32],
    /// Rows of the view.
    pub rows: usize,
    /// Columns of the view.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The sub-matrix of `rows × cols` starting at element `offset`, with the given strides.
    pub fn view(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        Mat { data: &data[offset..], rows, cols, row_stride, col_stride }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// One past the largest element index this view touches.
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// `out[i, j] (+)= scale · Σ_k a[i, k] · b[k, j]` on the calling thread; `out` is row-major with
/// row stride `out_stride`. With `accumulate` the product is added to what `out` holds.
///
/// Panics if a view reaches past its slice or the shapes disagree (callers build them from
/// checked model dimensions, so this is an internal invariant, not an input error).
pub fn matmul(a: Mat<'_>, b: Mat<'_>, out: &mut [f32], out_stride: usize, accumulate: bool, scale: f32) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len(), "matmul: operand view out of bounds");
    assert!(out_stride >= n, "matmul: output stride below its width");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * out_stride + n <= out.len(), "matmul: output view out of bounds");
    // SAFETY: the asserts above keep every element the product reads (`a`, `b`) or writes
    // (`out`, rows `0..m` of width `n` at stride `out_stride`) inside its slice; `out` is a
    // unique borrow, so it aliases neither input; one thread (`Parallelism::None`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The activation after the first feed-forward layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x · Φ(x)` with the exact (erf) normal CDF: BERT's `gelu`.
    GeluErf,
    /// The tanh approximation: `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

/// [`Elementwise::bias_act`] with the build of [`Kernels::auto`] (every build computes the
/// same bits).
pub fn bias_act(rows: &mut [f32], bias: &[f32], act: Option<Act>) {
    Kernels::auto().elementwise.bias_act(rows, bias, act)
}

/// [`Elementwise::gated_act`] with the build of [`Kernels::auto`].
pub fn gated_act(rows: &mut [f32], width: usize, act: Act) {
    Kernels::auto().elementwise.gated_act(rows, width, act)
}

/// [`Elementwise::layer_norm`] with the build of [`Kernels::auto`].
pub fn layer_norm(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    Kernels::auto().elementwise.layer_norm(rows, gamma, beta, eps)
}

/// [`Elementwise::masked_softmax`] with the build of [`Kernels::auto`].
pub fn masked_softmax(rows: &mut [f32], mask: &[u32]) {
    Kernels::auto().elementwise.masked_softmax(rows, mask)
}

/// [`Elementwise::argmax_shifted`] with the build of [`Kernels::auto`].
pub fn argmax_shifted(row: &[f32], shift: &[f32]) -> (usize, f32) {
    Kernels::auto().elementwise.argmax_shifted(row, shift)
}

/// [`Elementwise::combine_rows`] with the build of [`Kernels::auto`].
pub fn combine_rows(coef: &[f32], rows: &[f32], out: &mut [f32]) {
    Kernels::auto().elementwise.combine_rows(coef, rows, out)
}

/// The element-wise kernels of one build.
#[derive(Clone, Copy)]
struct Fns {
    bias_act: fn(&mut [f32], &[f32], Act),
    gated_act: fn(&mut [f32], usize, Act),
    layer_norm: fn(&mut [f32], &[f32], &[f32], f32),
    softmax: fn(&mut [f32], &[u32]),
    argmax: fn(&[f32], &[f32]) -> (usize, f32),
    combine: fn(&[f32], &[f32], &mut [f32]),
}

const GENERIC: Fns = Fns {
    bias_act: generic::bias_act,
    gated_act: generic::gated_act,
    layer_norm: generic::layer_norm,
    softmax: generic::softmax,
    argmax: generic::argmax_shifted,
    combine: generic::combine_rows,
};

#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
const AVX2: Fns = Fns {
    bias_act: avx2::bias_act,
    gated_act: avx2::gated_act,
    layer_norm: avx2::layer_norm,
    softmax: avx2::softmax,
    argmax: avx2::argmax_shifted,
    combine: avx2::combine_rows,
};

#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
const AVX512: Fns = Fns {
    bias_act: avx512::bias_act,
    gated_act: avx512::gated_act,
    layer_norm: avx512::layer_norm,
    softmax: avx512::softmax,
    argmax: avx512::argmax_shifted,
    combine: avx512::combine_rows,
};

impl Elementwise {
    /// This build's functions. [`crate::cpu::KernelChoice::resolve`] hands out a SIMD build
    /// only where the CPU runs it (and this binary compiled it).
    fn fns(self) -> &'static Fns {
        match self {
            #[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
            Elementwise::Avx512 if crate::cpu::Features::get().avx512 => &AVX512,
            #[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
            Elementwise::Avx2 if crate::cpu::Features::get().avx2 => &AVX2,
            _ => &GENERIC,
        }
    }

    /// Adds `bias` to every row of `rows` (row width = `bias.len()`), then applies `act` if
    /// given.
    pub fn bias_act(self, rows: &mut [f32], bias: &[f32], act: Option<Act>) {
        match act {
            Some(act) => (self.fns().bias_act)(rows, bias, act),
            None => generic::add_bias(rows, bias),
        }
    }

    /// The gated activation of a GLU feed-forward: each row of `rows` is `[input | gate]`,
    /// both `width` wide; `input` becomes `act(input) · gate` (the gate half is left as it
    /// was).
    pub fn gated_act(self, rows: &mut [f32], width: usize, act: Act) {
        (self.fns().gated_act)(rows, width, act)
    }

    /// Layer norm of every row of `rows` (width `gamma.len()`), in place, biased variance.
    pub fn layer_norm(self, rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        (self.fns().layer_norm)(rows, gamma, beta, eps)
    }

    /// Softmax of every row of `rows` (width `mask.len()`) over the columns whose `mask` is
    /// non-zero; masked columns become 0 (what adding `f32::MIN` before the softmax gives).
    pub fn masked_softmax(self, rows: &mut [f32], mask: &[u32]) {
        (self.fns().softmax)(rows, mask)
    }

    /// Index and value of the largest `row[j] - shift[j]` (the first one on ties; index 0 and
    /// -inf when nothing beats -inf). Used by k-means assignment (`score - |c|²/2`).
    pub fn argmax_shifted(self, row: &[f32], shift: &[f32]) -> (usize, f32) {
        (self.fns().argmax)(row, shift)
    }

    /// `out = Σ_j coef[j] · rows[j]`, where `rows` holds `coef.len()` rows of width
    /// `out.len()` (a vector–matrix product with a short vector; the residual codec's codeword
    /// scores).
    pub fn combine_rows(self, coef: &[f32], rows: &[f32], out: &mut [f32]) {
        (self.fns().combine)(coef, rows, out)
    }
}

/// One build of the element-wise kernels of [`generic`] for a set of target features, chosen at
/// run time after those features were detected.
#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
macro_rules! elementwise_build {
    ($features:literal) => {
        use super::{generic, Act};

        /// Bias + activation, this build.
        pub fn bias_act(rows: &mut [f32], bias: &[f32], act: Act) {
            // SAFETY: chosen only after this build's target features were detected at run time.
            unsafe { bias_act_impl(rows, bias, act) }
        }

        #[target_feature(enable = $features)]
        fn bias_act_impl(rows: &mut [f32], bias: &[f32], act: Act) {
            generic::bias_act_inline(rows, bias, act)
        }

        /// Gated activation, this build.
        pub fn gated_act(rows: &mut [f32], width: usize, act: Act) {
            // SAFETY: chosen only after this build's target features were detected at run time.
            unsafe { gated_act_impl(rows, width, act) }
        }

        #[target_feature(enable = $features)]
        fn gated_act_impl(rows: &mut [f32], width: usize, act: Act) {
            generic::gated_act_inline(rows, width, act)
        }

        /// Layer norm, this build.
        pub fn layer_norm(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
            // SAFETY: chosen only after this build's target features were detected at run time.
            unsafe { layer_norm_impl(rows, gamma, beta, eps) }
        }

        #[target_feature(enable = $features)]
        fn layer_norm_impl(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
            generic::layer_norm_inline(rows, gamma, beta, eps)
        }

        /// Masked softmax, this build.
        pub fn softmax(rows: &mut [f32], mask: &[u32]) {
            // SAFETY: chosen only after this build's target features were detected at run time.
            unsafe { softmax_impl(rows, mask) }
        }

        #[target_feature(enable = $features)]
        fn softmax_impl(rows: &mut [f32], mask: &[u32]) {
            generic::softmax_inline(rows, mask)
        }

        /// Row combination, this build.
        pub fn combine_rows(coef: &[f32], rows: &[f32], out: &mut [f32]) {
            // SAFETY: chosen only after this build's target features were detected at run time.
            unsafe { combine_impl(coef, rows, out) }
        }

        #[target_feature(enable = $features)]
        fn combine_impl(coef: &[f32], rows: &[f32], out: &mut [f32]) {
            generic::combine_rows_inline(coef, rows, out)
        }
    };
}

/// AVX-512 builds (16 lanes) of the element-wise kernels.
#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
mod avx512 {
    elementwise_build!("avx512f,avx2,fma");

    /// AVX-512 build of [`generic::argmax_shifted`]: 64 values per step in four running maxima
    /// (one would wait on its own latency every step).
    pub fn argmax_shifted(row: &[f32], shift: &[f32]) -> (usize, f32) {
        // SAFETY: chosen only after `avx512f` was detected at run time.
        unsafe { argmax_impl(row, shift) }
    }

    #[target_feature(enable = "avx512f")]
    fn argmax_impl(row: &[f32], shift: &[f32]) -> (usize, f32) {
        use std::arch::x86_64::*;
        let n = row.len().min(shift.len());
        let (rp, sp) = (row.as_ptr(), shift.as_ptr());
        let at = |i: usize| {
            // SAFETY: both loads read 16 floats at `i`, and callers pass `i + 16 <= n`, inside both
            // slices.
            unsafe { _mm512_sub_ps(_mm512_loadu_ps(rp.add(i)), _mm512_loadu_ps(sp.add(i))) }
        };
        let mut acc = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (a, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_max_ps(*acc, at(i + 16 * a));
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_max_ps(acc[0], at(i));
            i += 16;
        }
        let full = i;
        let both = _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]));
        let mut max = _mm512_reduce_max_ps(both);
        for j in full..n {
            max = max.max(row[j] - shift[j]);
        }
        if max == f32::NEG_INFINITY {
            return (0, max);
        }
        let target = _mm512_set1_ps(max);
        let mut i = 0;
        while i < full {
            let hits = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(at(i), target);
            if hits != 0 {
                return (i + hits.trailing_zeros() as usize, max);
            }
            i += 16;
        }
        (full..n).find(|&j| row[j] - shift[j] == max).map_or((0, max), |j| (j, max))
    }
}

/// AVX2 + FMA builds (8 lanes) of the element-wise kernels, and the shifted argmax.
#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
mod avx2 {
    elementwise_build!("avx2,fma");

    /// AVX2 build of [`generic::argmax_shifted`].
    pub fn argmax_shifted(row: &[f32], shift: &[f32]) -> (usize, f32) {
        // SAFETY: chosen only after `avx2` and `fma` were detected at run time.
        unsafe { argmax_impl(row, shift) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn argmax_impl(row: &[f32], shift: &[f32]) -> (usize, f32) {
        use std::arch::x86_64::*;
        let n = row.len().min(shift.len());
        let full = n / 8 * 8;
        let (rp, sp) = (row.as_ptr(), shift.as_ptr());
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < full {
            // SAFETY: `i + 8 <= full <= n`, inside both slices.
            let v = unsafe { _mm256_sub_ps(_mm256_loadu_ps(rp.add(i)), _mm256_loadu_ps(sp.add(i))) };
            acc = _mm256_max_ps(acc, v);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for j in full..n {
            max = max.max(row[j] - shift[j]);
        }
        if max == f32::NEG_INFINITY {
            return (0, max);
        }
        let target = _mm256_set1_ps(max);
        let mut i = 0;
        while i < full {
            // SAFETY: as above.
            let v = unsafe { _mm256_sub_ps(_mm256_loadu_ps(rp.add(i)), _mm256_loadu_ps(sp.add(i))) };
            let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, target));
            if hits != 0 {
                return (i + hits.trailing_zeros() as usize, max);
            }
            i += 8;
        }
        (full..n).find(|&j| row[j] - shift[j] == max).map_or((0, max), |j| (j, max))
    }
}

/// Portable code; `#[inline(always)]` bodies are recompiled inside the feature-enabled wrappers.
// Index loops on purpose: iterator adapters (`for_each`, `fold`) are separate functions compiled
// without the callers' target features.
#[allow(clippy::needless_range_loop)]
pub(crate) mod generic {
    use super::Act;

    const LANES: usize = 16;

    /// `e^x` for `x ≤ 88`: Cody–Waite reduction to `|r| ≤ ln2/2`, degree-6 Taylor polynomial,
    /// exponent built from bits. Branch-free, so loops over it vectorise. Inputs below -87 give
    /// about 1e-38 instead of a denormal, which is 0 for every use here.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let x = x.clamp(-87.0, 88.0);
        let n = (x * LOG2E + 0.5).floor();
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let p = 1.0 / 720.0;
        let p = p * r + 1.0 / 120.0;
        let p = p * r + 1.0 / 24.0;
        let p = p * r + 1.0 / 6.0;
        let p = p * r + 0.5;
        let p = p * r + 1.0;
        let p = p * r + 1.0;
        // 2^n from bits without a float → int cast (Rust's saturating `as` does not vectorise):
        // adding 1.5·2²³ puts the integer n + 127 ∈ [1, 254] in the low mantissa bits.
        let biased = (n + (12_582_912.0 + 127.0)).to_bits().wrapping_sub(0x4B40_0000);
        p * f32::from_bits(biased << 23)
    }

    /// `erf(x)` (Abramowitz & Stegun 7.1.26: 1.5e-7 in exact arithmetic, below 5e-7 in f32).
    #[inline(always)]
    pub fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly =
            ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
        let y = 1.0 - poly * exp(-a * a);
        // Near 0 the formula cancels (1 - ~1); the Taylor series is exact to 1e-8 there.
        let x2 = x * x;
        let series = x
            * std::f32::consts::FRAC_2_SQRT_PI
            * (1.0 + x2 * (-1.0 / 3.0 + x2 * (0.1 + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 - x2 / 1320.0)))));
        if a < 0.5 {
            series
        } else {
            y.copysign(x)
        }
    }

    #[inline(always)]
    fn act_one(x: f32, act: Act) -> f32 {
        match act {
            Act::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Act::GeluTanh => {
                // tanh(u) = 1 - 2 / (e^{2u} + 1), saturating cleanly at both ends.
                let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
                let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
                0.5 * x * (1.0 + tanh)
            }
            Act::Relu => x.max(0.0),
        }
    }

    /// Adds the bias to each row.
    pub fn add_bias(rows: &mut [f32], bias: &[f32]) {
        for row in rows.chunks_exact_mut(bias.len()) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x += b;
            }
        }
    }

    #[inline(always)]
    pub fn bias_act_inline(rows: &mut [f32], bias: &[f32], act: Act) {
        // Index loops, not iterator adapters: `for_each`/`fold` are separate functions that
        // would be compiled without the caller's target features (and call libm's `floorf`).
        let width = bias.len();
        for row in rows.chunks_exact_mut(width) {
            let row = &mut row[..width];
            match act {
                // One loop per activation, so each vectorises without a branch inside.
                Act::GeluErf => {
                    for i in 0..width {
                        row[i] = act_one(row[i] + bias[i], Act::GeluErf);
                    }
                }
                Act::GeluTanh => {
                    for i in 0..width {
                        row[i] = act_one(row[i] + bias[i], Act::GeluTanh);
                    }
                }
                Act::Relu => {
                    for i in 0..width {
                        row[i] = act_one(row[i] + bias[i], Act::Relu);
                    }
                }
            }
        }
    }

    /// Scalar build of bias + activation.
    pub fn bias_act(rows: &mut [f32], bias: &[f32], act: Act) {
        bias_act_inline(rows, bias, act)
    }

    #[inline(always)]
    pub fn gated_act_inline(rows: &mut [f32], width: usize, act: Act) {
        for row in rows.chunks_exact_mut(2 * width) {
            let (input, gate) = row.split_at_mut(width);
            let gate = &gate[..width];
            match act {
                // One loop per activation, as in `bias_act_inline`.
                Act::GeluErf => {
                    for i in 0..width {
                        input[i] = act_one(input[i], Act::GeluErf) * gate[i];
                    }
                }
                Act::GeluTanh => {
                    for i in 0..width {
                        input[i] = act_one(input[i], Act::GeluTanh) * gate[i];
                    }
                }
                Act::Relu => {
                    for i in 0..width {
                        input[i] = act_one(input[i], Act::Relu) * gate[i];
                    }
                }
            }
        }
    }

    /// Scalar build of the gated activation.
    pub fn gated_act(rows: &mut [f32], width: usize, act: Act) {
        gated_act_inline(rows, width, act)
    }

    /// Sum in `LANES` independent partial sums (vectorisable; the order is fixed).
    #[inline(always)]
    fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = xs.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += f(*x);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    fn lane_max(xs: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut chunks = xs.chunks_exact(LANES);
        // `>` rather than `f32::max`, whose NaN rule costs three instructions per vector.
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a = if x > *a { x } else { *a };
            }
        }
        chunks.remainder().iter().chain(acc.iter()).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
    }

    #[inline(always)]
    pub fn layer_norm_inline(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let width = gamma.len();
        for row in rows.chunks_exact_mut(width) {
            let mean = lane_sum(row, |x| x) / width as f32;
            let var = lane_sum(row, |x| (x - mean) * (x - mean)) / width as f32;
            let inv = 1.0 / (var + eps).sqrt();
            let row = &mut row[..width];
            for i in 0..width {
                row[i] = (row[i] - mean) * inv * gamma[i] + beta[i];
            }
        }
    }

    /// Scalar build of the layer norm.
    pub fn layer_norm(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        layer_norm_inline(rows, gamma, beta, eps)
    }

    #[inline(always)]
    pub fn softmax_inline(rows: &mut [f32], mask: &[u32]) {
        let width = mask.len();
        // Attention skips the padding after a sequence's last key, so most calls mask nothing.
        let masked = mask.contains(&0);
        for row in rows.chunks_exact_mut(width) {
            let row = &mut row[..width];
            if masked {
                for i in 0..width {
                    if mask[i] == 0 {
                        row[i] = f32::NEG_INFINITY;
                    }
                }
            }
            let max = lane_max(row);
            if max == f32::NEG_INFINITY {
                // Every key masked: PyTorch's additive mask gives a uniform row here.
                row.fill(1.0 / width as f32);
                continue;
            }
            let sum = if masked { exp_sum::<true>(row, max, mask) } else { exp_sum::<false>(row, max, mask) };
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }

    /// `row[i] = exp(row[i] - max)`, 0 where `MASKED` and `mask[i] == 0`, and returns the sum
    /// of the new values in the order of [`lane_sum`].
    #[inline(always)]
    fn exp_sum<const MASKED: bool>(row: &mut [f32], max: f32, mask: &[u32]) -> f32 {
        let full = row.len() / LANES * LANES;
        let mut acc = [0f32; LANES];
        // exp(-inf - max) → exp(-87) ≈ 1e-38 after the clamp; masked keys are zeroed exactly.
        let (row, tail_row) = row.split_at_mut(full);
        for (c, m) in row.chunks_exact_mut(LANES).zip(mask.chunks_exact(LANES)) {
            for l in 0..LANES {
                let e = exp(c[l] - max);
                let e = if MASKED && m[l] == 0 { 0.0 } else { e };
                c[l] = e;
                acc[l] += e;
            }
        }
        // The last `< LANES` values through one padded vector (scalar `exp` costs as much per
        // value as the vector one per 16).
        let len = tail_row.len();
        let mut last = [0f32; LANES];
        last[..len].copy_from_slice(tail_row);
        let mut keep = [0u32; LANES];
        keep[..len].copy_from_slice(&mask[full..]);
        for l in 0..LANES {
            let e = exp(last[l] - max);
            last[l] = if l >= len || (MASKED && keep[l] == 0) { 0.0 } else { e };
        }
        tail_row.copy_from_slice(&last[..len]);
        let tail: f32 = last[..len].iter().sum();
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    pub fn argmax_inline(row: &[f32], shift: &[f32]) -> (usize, f32) {
        // Two passes that vectorise: the maximum, then the first position that attains it
        // (both passes compute `row[j] - shift[j]` identically, so equality is exact).
        let n = row.len().min(shift.len());
        let (row, shift) = (&row[..n], &shift[..n]);
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let full = n / LANES * LANES;
        let mut base = 0;
        while base < full {
            for l in 0..LANES {
                lanes[l] = lanes[l].max(row[base + l] - shift[base + l]);
            }
            base += LANES;
        }
        let mut max = f32::NEG_INFINITY;
        for l in 0..LANES {
            max = max.max(lanes[l]);
        }
        for j in full..n {
            max = max.max(row[j] - shift[j]);
        }
        if max == f32::NEG_INFINITY {
            return (0, max);
        }
        let mut base = 0;
        while base < full {
            let mut hit = false;
            for l in 0..LANES {
                hit |= row[base + l] - shift[base + l] == max;
            }
            if hit {
                break;
            }
            base += LANES;
        }
        (base..n).find(|&j| row[j] - shift[j] == max).map_or((0, max), |j| (j, max))
    }

    /// Scalar build of the shifted argmax.
    pub fn argmax_shifted(row: &[f32], shift: &[f32]) -> (usize, f32) {
        argmax_inline(row, shift)
    }

    /// Baseline build of [`super::combine_rows`].
    pub fn combine_rows(coef: &[f32], rows: &[f32], out: &mut [f32]) {
        combine_rows_inline(coef, rows, out)
    }

    /// `out = Σ_j coef[j] · rows[j]` (index loops, so the target-feature builds vectorise).
    #[inline(always)]
    pub fn combine_rows_inline(coef: &[f32], rows: &[f32], out: &mut [f32]) {
        let w = out.len();
        assert!(rows.len() >= coef.len() * w, "combine_rows: {} rows of {w} do not fit", coef.len());
        out.fill(0.0);
        for (j, &c) in coef.iter().enumerate() {
            let row = &rows[j * w..(j + 1) * w];
            for i in 0..w {
                out[i] += c * row[i];
            }
        }
    }

    /// Scalar build of the masked softmax.
    pub fn softmax(rows: &mut [f32], mask: &[u32]) {
        softmax_inline(rows, mask)
    }
}

/// `buf` grown (never shrunk) to at least `len` elements, as exactly `len` elements; new
/// elements are zero. How per-thread scratch buffers are reused from call to call.
pub fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    use super::generic;
    use super::*;

    /// Every build this CPU runs (whatever `scalar-only` says), with its name.
    fn kernel_builds() -> Vec<(&'static str, &'static Fns)> {
        #[allow(unused_mut)] // only the SIMD builds push
        let mut builds: Vec<(&'static str, &'static Fns)> = vec![("generic", &GENERIC)];
        #[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
        {
            let f = crate::cpu::Features::hardware();
            if f.avx2 {
                builds.push(("avx2", &AVX2));
            }
            if f.avx512 {
                builds.push(("avx512", &AVX512));
            }
        }
        builds
    }

    /// The builds are one source compiled for several instruction sets: they agree bit for bit,
    /// so which one runs never changes an index.
    #[test]
    fn every_build_computes_the_same_bits() {
        let width = 45;
        let rows: Vec<f32> = (0..width * 7).map(|i| ((i * 7919) % 211) as f32 / 17.0 - 6.0).collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 37.0 - 0.4).collect();
        let mask: Vec<u32> = (0..width).map(|i| u32::from(i % 6 != 2)).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        let run = |k: &Fns| {
            let mut out = Vec::new();
            for act in [Act::GeluErf, Act::GeluTanh, Act::Relu] {
                let mut a = rows.clone();
                (k.bias_act)(&mut a, &bias, act);
                out.extend(bits(&a));
                let mut g = rows.clone();
                (k.gated_act)(&mut g, width / 3, act);
                out.extend(bits(&g));
            }
            let mut a = rows.clone();
            (k.softmax)(&mut a, &mask);
            out.extend(bits(&a));
            let mut a = rows.clone();
            (k.layer_norm)(&mut a, &bias, &bias, 1e-12);
            out.extend(bits(&a));
            let mut c = vec![0f32; width];
            (k.combine)(&[0.5, -1.25, 2.0, 0.125], &rows, &mut c);
            out.extend(bits(&c));
            for row in rows.chunks(width) {
                let (j, v) = (k.argmax)(row, &bias);
                out.extend([j as u32, v.to_bits()]);
            }
            out
        };
        let want = run(&GENERIC);
        for (name, k) in kernel_builds() {
            assert!(run(k) == want, "{name} differs from the generic build");
        }
    }

    /// erf by its Taylor series in f64: exact to ~1e-12 for |x| ≤ 3.5 (cancellation grows beyond).
    fn erf_ref(x: f64) -> f64 {
        let mut sum = 0.0f64;
        let mut term = x;
        for n in 0..200 {
            let n = n as f64;
            sum += term / (2.0 * n + 1.0);
            term *= -x * x / (n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_accurate() {
        let mut x = -80.0f32;
        while x < 80.0 {
            let got = generic::exp(x) as f64;
            let want = (x as f64).exp();
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert!(generic::exp(f32::NEG_INFINITY) < 1e-37);
        // The clamp's ends build the smallest and largest exponents (2^-126 and 2^127).
        for x in [-87.0f32, 88.0] {
            let (got, want) = (generic::exp(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn erf_is_accurate() {
        let mut x = -3.5f32;
        while x < 3.5 {
            let got = generic::erf(x) as f64;
            let want = erf_ref(x as f64);
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
            x += 0.001;
        }
        // Beyond 3.5, 1 - |erf| < erfc(3.5) ≈ 7.4e-7.
        for x in [-9.0f32, -5.0, -3.6, 3.6, 5.0, 9.0, 1e6] {
            assert!((generic::erf(x) - x.signum()).abs() < 1e-6, "erf({x})");
        }
    }

    /// Every build's softmax against the definition in f64: widths with and without a partial
    /// last vector, masks with and without masked keys, and a row with every key masked.
    #[test]
    fn softmax_matches_the_definition() {
        for width in [1usize, 5, 16, 37, 190] {
            for masking in [None, Some(3), Some(1)] {
                let rows: Vec<f32> = (0..width * 3).map(|i| ((i * 7919) % 113) as f32 / 9.0 - 6.0).collect();
                let mask: Vec<u32> =
                    (0..width).map(|i| masking.map_or(1, |every| u32::from(i % (every + 1) != 0))).collect();
                for (name, k) in kernel_builds() {
                    let mut got = rows.clone();
                    (k.softmax)(&mut got, &mask);
                    for (r, (row, out)) in rows.chunks(width).zip(got.chunks(width)).enumerate() {
                        let kept: Vec<usize> = (0..width).filter(|&i| mask[i] != 0).collect();
                        let max = kept.iter().map(|&i| row[i] as f64).fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = kept.iter().map(|&i| (row[i] as f64 - max).exp()).sum();
                        for i in 0..width {
                            let want = if kept.is_empty() {
                                1.0 / width as f64
                            } else if mask[i] == 0 {
                                0.0
                            } else {
                                (row[i] as f64 - max).exp() / sum
                            };
                            let ctx = format!("{name} width {width} mask {masking:?} [{r}][{i}]");
                            assert!(
                                (out[i] as f64 - want).abs() <= 2e-7 + 1e-6 * want,
                                "{ctx}: {} vs {want}",
                                out[i]
                            );
                            if mask[i] == 0 && !kept.is_empty() {
                                assert_eq!(out[i], 0.0, "{ctx}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_build_agrees_with_the_scalar_one() {
        let width = 37;
        let rows: Vec<f32> = (0..width * 5).map(|i| ((i * 7919) % 113) as f32 / 13.0 - 4.0).collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 50.0).collect();
        let mask: Vec<u32> = (0..width).map(|i| u32::from(i % 5 != 3)).collect();
        for (name, k) in kernel_builds() {
            for act in [Act::GeluErf, Act::GeluTanh, Act::Relu] {
                let (mut a, mut b) = (rows.clone(), rows.clone());
                generic::bias_act(&mut a, &bias, act);
                (k.bias_act)(&mut b, &bias, act);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{name} {act:?}");
                }
            }
            let (mut a, mut b) = (rows.clone(), rows.clone());
            generic::softmax(&mut a, &mask);
            (k.softmax)(&mut b, &mask);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6, "{name} softmax");
            }
            for (i, x) in b.iter().enumerate() {
                if i % width % 5 == 3 {
                    assert_eq!(*x, 0.0, "{name} softmax");
                }
            }
            for row in b.chunks(width) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{name} softmax");
            }
            let (mut a, mut b) = (rows.clone(), rows.clone());
            generic::layer_norm(&mut a, &bias, &bias, 1e-12);
            (k.layer_norm)(&mut b, &bias, &bias, 1e-12);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5, "{name} layer norm");
            }
            let coef = [0.5f32, -1.25, 2.0];
            let (mut a, mut b) = (vec![0f32; width], vec![0f32; width]);
            generic::combine_rows(&coef, &rows, &mut a);
            (k.combine)(&coef, &rows, &mut b);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let want: f32 = coef.iter().enumerate().map(|(j, c)| c * rows[j * width + i]).sum();
                assert!((x - want).abs() <= 1e-5 && (y - want).abs() <= 1e-5, "{name} combine");
            }
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        for n in [1usize, 5, 16, 17, 40, 100, 256, 300] {
            let shift: Vec<f32> = (0..n).map(|j| (j % 3) as f32 * 0.5).collect();
            for t in 0..n {
                // A plateau of equal maxima from t on: the first one must win.
                let row: Vec<f32> =
                    (0..n).map(|j| if j >= t { 10.0 + shift[j] } else { (j % 7) as f32 }).collect();
                for (name, k) in kernel_builds() {
                    assert_eq!((k.argmax)(&row, &shift), (t, 10.0), "{name} n {n} t {t}");
                }
            }
        }
        assert_eq!(
            Elementwise::Generic.argmax_shifted(&[f32::NEG_INFINITY; 3], &[0.0; 3]),
            (0, f32::NEG_INFINITY)
        );
    }

    #[test]
    fn matmul_matches_naive_with_strides() {
        let (m, k, n) = (7, 11, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 9) as f32 - 4.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
        // b given transposed: stored [n × k], viewed as [k × n].
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut out = vec![1.0f32; m * (n + 2)];
        matmul(Mat::dense(&a, m, k), Mat::dense(&bt, n, k).t(), &mut out, n + 2, true, 0.5);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + 0.5 * (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>();
                assert!((out[i * (n + 2) + j] - want).abs() < 1e-4);
            }
            assert_eq!(out[i * (n + 2) + n], 1.0);
        }
    }
}
