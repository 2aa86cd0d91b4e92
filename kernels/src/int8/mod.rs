//! 8-bit dot products of many rows (centroids) with a few columns (query tokens): the cheap
//! first look at every centroid that WARP mode takes before re-scoring the few it keeps in f32.
//!
//! Rows and columns are quantised symmetrically per vector (`x ≈ step · i`, `|i| ≤ 127`); a row is
//! stored offset by 128 as unsigned bytes, so that AVX-512 VNNI's `vpdpbusd` (unsigned × signed
//! bytes, four products added into each 32-bit lane) computes `Σ (i_r + 128) · i_q`, from which
//! `128 · Σ i_q` is taken away (as do the AMX tiles' `tdpbusd`, [`amx`], where the process may
//! use them). The integer sums are exact on every path (at most `dim · 255 · 127`, far inside
//! an i32), so the portable body returns the same numbers; the
//! score is then `sum · step_r · step_q` in f32. A product is off by about
//! `√dim · step_r · step_q · 127 / 2` at worst per side's rounding: around 1e-3 for unit
//! vectors at dim 128, the size of bf16's rounding.

use crate::detect::Isa;

pub mod amx;

/// Query tokens per group of lanes (one AVX-512 register of i32).
pub const LANES: usize = 16;

/// Rows quantised to 8 bits, each padded to a multiple of 4 values.
#[derive(Debug, Clone, Default)]
pub struct I8Rows {
    /// Values per row after padding (a multiple of 4).
    width: usize,
    /// `rows × width` bytes: `i + 128`.
    data: Vec<u8>,
    /// Per row, the value of one step.
    step: Vec<f32>,
}

/// The value of one step when `v` is quantised: `max |v| / 127` (0 for a zero vector or one with
/// an infinity, which quantises to zeros). Each value moves by at most half of it.
pub fn step(v: &[f32]) -> f32 {
    let largest = v.iter().fold(0f32, |m, &x| if x.abs() > m { x.abs() } else { m });
    if largest == 0.0 || !largest.is_finite() {
        return 0.0;
    }
    largest / 127.0
}

/// Quantises one vector: its step and the rounded multiples.
fn quantise(v: &[f32], out: &mut [i8]) -> f32 {
    let step = step(v);
    if step == 0.0 {
        out.fill(0);
        return 0.0;
    }
    for (o, &x) in out.iter_mut().zip(v) {
        *o = (x / step).round().clamp(-127.0, 127.0) as i8;
    }
    step
}

impl I8Rows {
    /// Quantises `rows × dim` row-major values.
    ///
    /// # Panics
    /// If `values` is not `rows × dim`.
    pub fn new(values: &[f32], rows: usize, dim: usize) -> Self {
        assert_eq!(values.len(), rows * dim, "row shape");
        let width = dim.div_ceil(4) * 4;
        let mut data = vec![128u8; rows * width];
        let mut step = Vec::with_capacity(rows);
        let mut q = vec![0i8; dim];
        for (row, out) in values.chunks_exact(dim.max(1)).zip(data.chunks_exact_mut(width)) {
            step.push(quantise(row, &mut q));
            for (o, &v) in out.iter_mut().zip(&q) {
                *o = (v as i16 + 128) as u8;
            }
        }
        I8Rows { width, data, step }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.step.len()
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.data.len() + 4 * self.step.len()
    }
}

/// Query tokens quantised to 8 bits, packed for [`scores`]: for each group of four values,
/// `lanes` tokens of four bytes, with zero groups up to a multiple of 64 values (the steps of
/// [`amx`]).
#[derive(Debug, Clone, Default)]
pub struct I8Columns {
    nq: usize,
    lanes: usize,
    width: usize,
    /// `padded / 4 × lanes × 4` bytes, `padded` the width rounded up to 64.
    packed: Vec<i8>,
    step: Vec<f32>,
    /// Per lane, `128 · Σ i_q` (taken away from the sums of offset rows).
    offset: Vec<i32>,
}

impl I8Columns {
    /// Quantises `nq` tokens of `dim` values (row-major).
    ///
    /// # Panics
    /// If `tokens` is not `nq × dim`.
    pub fn new(tokens: &[f32], nq: usize, dim: usize) -> Self {
        assert_eq!(tokens.len(), nq * dim, "query shape");
        let width = dim.div_ceil(4) * 4;
        let lanes = nq.div_ceil(LANES).max(1) * LANES;
        let mut packed = vec![0i8; width.div_ceil(64) * 64 * lanes];
        let mut step = vec![0f32; lanes];
        let mut offset = vec![0i32; lanes];
        let mut q = vec![0i8; dim];
        for (t, token) in tokens.chunks_exact(dim.max(1)).enumerate() {
            step[t] = quantise(token, &mut q);
            offset[t] = 128 * q.iter().map(|&v| v as i32).sum::<i32>();
            for (d, &v) in q.iter().enumerate() {
                packed[((d / 4) * lanes + t) * 4 + d % 4] = v;
            }
        }
        I8Columns { nq, lanes, width, packed, step, offset }
    }

    /// Query tokens.
    pub fn nq(&self) -> usize {
        self.nq
    }
}

/// `out[r][q]` ≈ row `first + r` · token `q` for `out.len() / nq` rows from `first`
/// (row-major `[rows × nq]`): the exact integer sums of the quantised values, times both steps.
/// AVX-512 VNNI where the CPU has it, else a portable loop (the same numbers).
///
/// # Panics
/// If the rows and columns differ in width, or the rows asked for are not there.
pub fn scores(rows: &I8Rows, first: usize, cols: &I8Columns, out: &mut [f32]) {
    assert_eq!(rows.width, cols.width, "widths");
    let nq = cols.nq;
    assert!(nq > 0 && out.len().is_multiple_of(nq), "output rows");
    let n = out.len() / nq;
    assert!(first + n <= rows.rows(), "rows out of range");
    if tiles_usable() {
        if let Some(mut tiles) = amx::Hardware::new() {
            return amx::scores(&mut tiles, rows, first, cols, out);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512vnni {
        // SAFETY: AVX-512F, BW and VNNI were detected at run time; the shapes were asserted.
        return unsafe { x86::scores_vnni(rows, first, cols, out) };
    }
    scores_portable(rows, first, cols, out)
}

/// Whether [`scores`] runs on the AMX tiles in this process ([`amx::usable`], with AVX-512 for
/// turning the sums into scores). Decided once per process (both answers are cached).
pub fn tiles_usable() -> bool {
    Isa::get().avx512 && amx::usable()
}

/// Scores from integer sums: for each of `row_steps.len()` rows `r` and each query token `q` in
/// `lanes`, `out[r · nq + q]` from `sums[r · stride + q − lanes.start]` by [`finish`]'s
/// operations (AVX-512 where the CPU has it: the same bits).
fn finish_rows(
    sums: &[i32],
    stride: usize,
    row_steps: &[f32],
    cols: &I8Columns,
    lanes: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let nq = cols.nq;
    assert!(lanes.end <= nq && out.len() == row_steps.len() * nq, "finish shape");
    assert!(
        lanes.is_empty()
            || row_steps.is_empty()
            || (row_steps.len() - 1) * stride + lanes.len() <= sums.len()
    );
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512 && lanes.start.is_multiple_of(LANES) {
        // SAFETY: AVX-512F was detected at run time; the shapes were asserted, and `cols` holds
        // `offset` and `step` for every lane up to a multiple of 16 past `lanes.end`.
        return unsafe { x86::finish_rows(sums, stride, row_steps, cols, lanes, out) };
    }
    for (r, &row_step) in row_steps.iter().enumerate() {
        for q in lanes.clone() {
            let sum = sums[r * stride + q - lanes.start];
            out[r * nq + q] = finish(sum, cols.offset[q], row_step, cols.step[q]);
        }
    }
}

/// Whether [`scores`] runs the AVX-512 VNNI kernel on this CPU (the portable loop is much
/// slower than a bf16 or f32 product).
pub fn fast() -> bool {
    Isa::get().avx512vnni
}

/// The portable body of [`scores`].
fn scores_portable(rows: &I8Rows, first: usize, cols: &I8Columns, out: &mut [f32]) {
    let (nq, lanes, width) = (cols.nq, cols.lanes, rows.width);
    for (r, out) in out.chunks_exact_mut(nq).enumerate() {
        let row = &rows.data[(first + r) * width..(first + r + 1) * width];
        for (q, o) in out.iter_mut().enumerate() {
            let mut sum = 0i32;
            for (d, &a) in row.iter().enumerate() {
                sum += a as i32 * cols.packed[((d / 4) * lanes + q) * 4 + d % 4] as i32;
            }
            *o = finish(sum, cols.offset[q], rows.step[first + r], cols.step[q]);
        }
    }
}

/// One score from its integer sum: the same operations on every path. The `+ 0.0` turns a
/// `-0.0` (a negative sum whose product of steps underflows) into `+0.0`, so that the scores
/// hold no `-0.0` and block-wise selections of the best rows ([`crate::select::ColumnTop`])
/// agree with one pass over all of them.
#[inline(always)]
fn finish(sum: i32, offset: i32, row_step: f32, col_step: f32) -> f32 {
    (sum - offset) as f32 * (row_step * col_step) + 0.0
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod x86 {
    use super::{I8Columns, I8Rows, LANES};
    use std::arch::x86_64::*;

    /// [`super::finish_rows`] 16 lanes at a time.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the shapes must be as [`super::finish_rows`] asserts, with
    /// `lanes.start` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn finish_rows(
        sums: &[i32],
        stride: usize,
        row_steps: &[f32],
        cols: &I8Columns,
        lanes: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let nq = cols.nq;
        // Per group of 16 lanes: its mask, offsets and column steps, the same for every row
        // (the rows are finished four groups at a time).
        for first in lanes.clone().step_by(4 * LANES) {
            let span = first..lanes.end.min(first + 4 * LANES);
            let mut groups = [(0, 0, _mm512_setzero_si512(), _mm512_setzero_ps()); 4];
            let n = span.len().div_ceil(LANES);
            for (g, lane) in groups.iter_mut().zip(span.clone().step_by(LANES)) {
                let keep = (span.end - lane).min(LANES);
                let mask: __mmask16 = if keep == LANES { !0 } else { (1u16 << keep) - 1 };
                // SAFETY: `offset` and `step` hold `cols.lanes` values, a multiple of 16 past
                // `lane`.
                *g = unsafe {
                    (
                        lane,
                        mask,
                        _mm512_loadu_si512(cols.offset.as_ptr().add(lane).cast()),
                        _mm512_loadu_ps(cols.step.as_ptr().add(lane)),
                    )
                };
            }
            let groups = &groups[..n];
            for (r, &row_step) in row_steps.iter().enumerate() {
                let row_step = _mm512_set1_ps(row_step);
                for &(lane, mask, offset, col_step) in groups {
                    // SAFETY: the lanes the mask keeps lie in `sums` (asserted by the caller); the
                    // masked load reads no others.
                    let sum = unsafe {
                        _mm512_maskz_loadu_epi32(
                            mask,
                            sums.as_ptr().add(r * stride + lane - lanes.start).cast(),
                        )
                    };
                    // (sum − offset) as f32 · (row step · column step) + 0, as `finish` computes it.
                    let score = _mm512_add_ps(
                        _mm512_mul_ps(
                            _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset)),
                            _mm512_mul_ps(row_step, col_step),
                        ),
                        _mm512_setzero_ps(),
                    );
                    // SAFETY: `out` holds `row_steps.len() × nq` scores; the mask stores lanes below
                    // `lanes.end ≤ nq` only.
                    unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(r * nq + lane), mask, score) };
                }
            }
        }
    }

    /// [`super::scores_portable`] with `vpdpbusd`: four rows and two registers of 16 query
    /// tokens at a time, each step broadcasting four bytes of a row against four bytes of every
    /// token.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, BW and VNNI; the shapes must be as [`super::scores`]
    /// asserts.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn scores_vnni(rows: &I8Rows, first: usize, cols: &I8Columns, out: &mut [f32]) {
        let (nq, lanes) = (cols.nq, cols.lanes);
        let n = out.len() / nq;
        let mut r = 0;
        while r < n {
            let block = (n - r).min(4);
            let out = &mut out[r * nq..(r + block) * nq];
            let mut g = 0;
            while g < lanes {
                if lanes - g >= 2 * LANES {
                    // SAFETY: as this function's; rows `first + r ..+ block` exist.
                    unsafe { block_scores::<2>(rows, first + r, block, cols, g, out) };
                    g += 2 * LANES;
                } else {
                    // SAFETY: as above.
                    unsafe { block_scores::<1>(rows, first + r, block, cols, g, out) };
                    g += LANES;
                }
            }
            r += block;
        }
    }

    /// The scores of `block` (at most 4) rows from `row` against `G` registers of query tokens
    /// from lane `g`, into `out` (`nq` per row; lanes past `nq` are not stored): the integer
    /// sums, then [`finish`]'s operations lane by lane.
    ///
    /// # Safety
    /// As [`scores_vnni`]; rows `row .. row + block` and lanes `g .. g + 16 G` exist, and `out`
    /// holds `block × nq` scores.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block_scores<const G: usize>(
        rows: &I8Rows,
        row: usize,
        block: usize,
        cols: &I8Columns,
        g: usize,
        out: &mut [f32],
    ) {
        let nq = cols.nq;
        let (lanes, width) = (cols.lanes, rows.width);
        let mut acc = [[_mm512_setzero_si512(); G]; 4];
        // Rows past the block read the block's last row again (their sums are not stored).
        let base: [*const u8; 4] =
            std::array::from_fn(|i| rows.data[(row + i.min(block - 1)) * width..].as_ptr());
        let q = cols.packed.as_ptr();
        for s in 0..width / 4 {
            let mut qv = [_mm512_setzero_si512(); G];
            for (j, v) in qv.iter_mut().enumerate() {
                // SAFETY: `packed` holds `width / 4 × lanes × 4` bytes; these are 64 of them.
                *v = unsafe { _mm512_loadu_si512(q.add((s * lanes + g + j * LANES) * 4).cast()) };
            }
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: each row holds `width` bytes, `4 s + 4 ≤ width`.
                let word = unsafe { base[i].add(s * 4).cast::<i32>().read_unaligned() };
                let b = _mm512_set1_epi32(word);
                for (a, &v) in a.iter_mut().zip(&qv) {
                    *a = _mm512_dpbusd_epi32(*a, b, v);
                }
            }
        }
        for (i, a) in acc.iter().enumerate().take(block) {
            let row_step = _mm512_set1_ps(rows.step[row + i]);
            for (j, &v) in a.iter().enumerate() {
                let lane = g + j * LANES;
                if lane >= nq {
                    break;
                }
                // SAFETY: `offset` and `step` hold `lanes` values; 16 from `lane`.
                let (offset, col_step) = unsafe {
                    (
                        _mm512_loadu_si512(cols.offset.as_ptr().add(lane).cast()),
                        _mm512_loadu_ps(cols.step.as_ptr().add(lane)),
                    )
                };
                // (sum − offset) as f32 · (row step · column step) + 0, as `finish` computes it.
                let score = _mm512_add_ps(
                    _mm512_mul_ps(
                        _mm512_cvtepi32_ps(_mm512_sub_epi32(v, offset)),
                        _mm512_mul_ps(row_step, col_step),
                    ),
                    _mm512_setzero_ps(),
                );
                let keep = (nq - lane).min(LANES);
                let mask: __mmask16 = if keep == LANES { !0 } else { (1u16 << keep) - 1 };
                // SAFETY: `out` holds `block × nq` scores; the mask stores only lanes below `nq`.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(i * nq + lane), mask, score) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_gives_the_same_scores_close_to_f32() {
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        for (rows, dim, nq) in [(9, 128, 32), (5, 30, 3), (13, 64, 40), (1, 4, 1)] {
            let a: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
            let b: Vec<f32> = (0..nq * dim).map(|_| next()).collect();
            let (ra, cb) = (I8Rows::new(&a, rows, dim), I8Columns::new(&b, nq, dim));
            let mut fast = vec![0f32; (rows - 1) * nq];
            scores(&ra, 1, &cb, &mut fast);
            let mut slow = vec![0f32; (rows - 1) * nq];
            scores_portable(&ra, 1, &cb, &mut slow);
            assert_eq!(fast, slow);
            // The VNNI kernel where the CPU has it (`scores` may have run on the AMX tiles).
            #[cfg(target_arch = "x86_64")]
            if Isa::get().avx512vnni {
                let mut vnni = vec![0f32; (rows - 1) * nq];
                // SAFETY: VNNI detected just above; the shapes are those `scores` asserted.
                unsafe { x86::scores_vnni(&ra, 1, &cb, &mut vnni) };
                assert_eq!(vnni, slow);
            }
            for r in 1..rows {
                for q in 0..nq {
                    let exact: f32 = (0..dim).map(|d| a[r * dim + d] * b[q * dim + d]).sum();
                    // Each side rounded by at most half a step per value.
                    let bound = (0..dim)
                        .map(|d| {
                            a[r * dim + d].abs() * cb.step[q] / 2.0 + b[q * dim + d].abs() * ra.step[r] / 2.0
                        })
                        .sum::<f32>()
                        + dim as f32 * ra.step[r] * cb.step[q] / 4.0
                        + 1e-4;
                    let got = fast[(r - 1) * nq + q];
                    assert!((got - exact).abs() <= bound, "{got} vs {exact} (bound {bound})");
                }
            }
        }
    }

    #[test]
    fn no_path_gives_a_negative_zero() {
        // Steps of about 1e-27 each: their product underflows to zero, and the sums are negative.
        let (dim, nq) = (16, 3);
        let a: Vec<f32> = (0..2 * dim).map(|i| if i % 3 == 0 { 1e-25 } else { 3e-26 }).collect();
        let b: Vec<f32> = (0..nq * dim).map(|i| if i % 2 == 0 { -1e-25 } else { -2e-26 }).collect();
        let (ra, cb) = (I8Rows::new(&a, 2, dim), I8Columns::new(&b, nq, dim));
        let (mut fast, mut slow) = (vec![1f32; 2 * nq], vec![1f32; 2 * nq]);
        scores(&ra, 0, &cb, &mut fast);
        scores_portable(&ra, 0, &cb, &mut slow);
        for v in fast.iter().chain(&slow) {
            assert_eq!(v.to_bits(), 0, "{v:?} is not +0.0");
        }
    }
}
