//! An f32 matrix product against a right-hand side packed once and reused: the centroid matrix
//! of a compressed index (stage 1 of PLAID scores every query against it) and a query's
//! transpose (stage 4 scores many documents against it). Packing a 4 MiB centroid matrix on
//! every call, as a general-purpose product must, costs as much as the product itself.
//!
//! `B` (`[k, n]`) is stored as panels of [`NR`] columns, each panel `k` rows of `NR` floats, so
//! the AVX-512 micro-kernel streams a panel with two aligned-size loads per `k` and broadcasts
//! one `A` value per row. Without AVX-512 the product goes to the general kernel in
//! [`super::ops::matmul`] on the unpacked copy.

use crate::cpu::{F32Dense, Features, Kernels};
use crate::ops::{matmul, Mat};

/// Output columns per panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per micro-kernel call.
const MR: usize = 12;

/// A right-hand side `[k, n]` packed for [`matmul_packed`].
#[derive(Debug, Clone, Default)]
pub struct PackedMat {
    k: usize,
    n: usize,
    /// Row-major `[k, n]` copy for the portable path (empty where there are panels).
    dense: Vec<f32>,
    /// `ceil(n / NR)` panels of `k × NR` floats (zero-padded columns), when AVX-512 is used.
    panels: Vec<f32>,
}

/// Whether this CPU (and build) runs the AVX-512 kernel (the panels-only entry points need it).
pub fn use_avx512() -> bool {
    Features::get().avx512
}

impl PackedMat {
    /// Packs `b`, a `[k, n]` view (any strides), for the f32 product of [`Kernels::auto`].
    pub fn pack(b: Mat<'_>) -> PackedMat {
        PackedMat::pack_for(b, Kernels::auto().f32_dense)
    }

    /// Packs `b`, a `[k, n]` view (any strides), for the given f32 product: panels for
    /// [`F32Dense::Avx512Panels`], a plain copy for [`F32Dense::General`].
    pub fn pack_for(b: Mat<'_>, kernel: F32Dense) -> PackedMat {
        let (k, n) = (b.rows, b.cols);
        let at = |r: usize, c: usize| b.data[r * b.row_stride + c * b.col_stride];
        let dense: Vec<f32> =
            (0..k).flat_map(|r| (0..n).map(move |c| (r, c))).map(|(r, c)| at(r, c)).collect();
        let mut panels = Vec::new();
        if kernel == F32Dense::Avx512Panels && use_avx512() {
            panels = vec![0f32; n.div_ceil(NR) * k * NR];
            for (p, panel) in panels.chunks_exact_mut(k * NR).enumerate() {
                for r in 0..k {
                    for c in 0..NR.min(n - p * NR) {
                        panel[r * NR + c] = dense[r * n + p * NR + c];
                    }
                }
            }
        }
        // The portable copy is read only where there are no panels.
        let dense = if panels.is_empty() { dense } else { Vec::new() };
        PackedMat { k, n, dense, panels }
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Repacks in place, reusing the allocation, a `[k, n]` matrix whose element `(row, col)` is
    /// `at(row, col)`, as panels only (no portable copy): for [`matmul_panels`], so only where
    /// [`use_avx512`] is true (asserted).
    pub fn repack_panels(&mut self, k: usize, n: usize, at: impl Fn(usize, usize) -> f32) {
        assert!(use_avx512(), "packed panels built on a CPU without AVX-512");
        self.dense.clear();
        self.panels.clear();
        self.panels.resize(n.div_ceil(NR) * k * NR, 0.0);
        for (p, panel) in self.panels.chunks_exact_mut(k * NR).enumerate() {
            let width = NR.min(n - p * NR);
            for (r, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (c, slot) in row[..width].iter_mut().enumerate() {
                    *slot = at(r, p * NR + c);
                }
            }
        }
        (self.k, self.n) = (k, n);
    }
}

/// `out (+)= a · b` on strided rows with the AVX-512 kernel: row `i` of `a` (`b.k()` wide) starts
/// at `a[i * a_stride]`, row `i` of `out` (`b.n()` wide) at `out[i * out_stride]`. `b` must have
/// panels (packed where [`use_avx512`] is true; asserted). Panics if a view leaves its slice.
pub fn matmul_panels(
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &PackedMat,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    matmul_panel_range(a, a_stride, m, b, 0..b.n.div_ceil(NR), out, out_stride, accumulate)
}

/// [`matmul_panels`] on the columns of `b`'s panels `panels` only (`NR` columns each, the last
/// one possibly narrower): column `panels.start * NR` of `b` lands in column 0 of `out`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_panel_range(
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &PackedMat,
    panels: std::ops::Range<usize>,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    assert!(!b.panels.is_empty() || b.k * b.n == 0, "matmul_panels: operand not packed in panels");
    let cols = b.n.min(panels.end * NR).saturating_sub(panels.start * NR);
    assert!(panels.end <= b.n.div_ceil(NR), "matmul_panels: panel range out of bounds");
    assert!(a_stride >= b.k && out_stride >= cols, "matmul_panels: stride below the width");
    if m == 0 || cols == 0 {
        return;
    }
    assert!((m - 1) * a_stride + b.k <= a.len(), "matmul_panels: lhs out of bounds");
    assert!((m - 1) * out_stride + cols <= out.len(), "matmul_panels: output out of bounds");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: panels are only built after AVX-512F was detected at run time (asserted non-empty
    // above; an empty `k` leaves nothing for the kernel to read).
    unsafe {
        x86::matmul(a, a_stride, m, b, panels, out, out_stride, accumulate)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, out, accumulate, panels);
}

/// `out = a · b` on the calling thread: `a` is `[m, b.k()]` row-major, `out` `[m, b.n()]`
/// row-major. Panics on shape mismatch (an internal invariant).
pub fn matmul_packed(a: &[f32], m: usize, b: &PackedMat, out: &mut [f32]) {
    assert_eq!(a.len(), m * b.k, "matmul_packed: lhs shape");
    assert_eq!(out.len(), m * b.n, "matmul_packed: output shape");
    if !b.panels.is_empty() {
        return matmul_panels(a, b.k, m, b, out, b.n, false);
    }
    matmul(Mat::dense(a, m, b.k), Mat::dense(&b.dense, b.k, b.n), out, b.n, false, 1.0);
}

/// `out = a[rows] · b` on the calling thread: row `i` of the product is row `rows[i]` of `a`
/// (row-major, `b.k()` wide) times `b`, with the same bits as [`matmul_packed`] on a copy of
/// those rows (every output is the same chain of multiply-adds in `k` order), without making the
/// copy. `out` is `[rows.len(), b.n()]` row-major. Panics on shape mismatch or a row past the end
/// of `a` (internal invariants).
pub fn matmul_packed_rows(a: &[f32], rows: &[u32], b: &PackedMat, out: &mut [f32]) {
    let k = b.k;
    assert_eq!(out.len(), rows.len() * b.n, "matmul_packed_rows: output shape");
    assert!(rows.iter().all(|&r| (r as usize + 1) * k <= a.len()), "matmul_packed_rows: row out of range");
    if b.panels.is_empty() {
        let copy: Vec<f32> =
            rows.iter().flat_map(|&r| &a[r as usize * k..(r as usize + 1) * k]).copied().collect();
        return matmul_packed(&copy, rows.len(), b, out);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: panels are only built after AVX-512F was detected at run time; every row was
    // checked to lie inside `a` above.
    unsafe {
        x86::matmul_rows(a, rows, b, out)
    };
}

/// One output of the packed product on its own: `Σ_t a[t]·b[t]` as a chain of fused
/// multiply-adds in `t` order from zero, which is what [`matmul_packed`] computes for each output
/// with the AVX-512 kernel (the same bits).
pub fn dot_chain(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if use_avx512() {
        // SAFETY: AVX-512F (hence FMA) was detected at run time.
        return unsafe { x86::dot_chain(a, b) };
    }
    // `mul_add` is fused (one rounding) everywhere: a library call without the instruction.
    a.iter().zip(b).fold(0f32, |acc, (&x, &y)| x.mul_add(y, acc))
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PackedMat, MR, NR};
    use crate::tile::Dst;

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        a: &[f32],
        a_stride: usize,
        m: usize,
        b: &PackedMat,
        panels: std::ops::Range<usize>,
        out: &mut [f32],
        out_stride: usize,
        accumulate: bool,
    ) {
        let (k, n) = (b.k, b.n);
        let first = panels.start;
        for (p, panel) in b.panels.chunks_exact(k * NR).enumerate().take(panels.end).skip(first) {
            let n0 = p * NR;
            let width = NR.min(n - n0);
            // Where the panel's columns land in `out`.
            let c0 = n0 - first * NR;
            for r0 in (0..m).step_by(MR) {
                let rows = MR.min(m - r0);
                let dst = Dst::new(&mut out[r0 * out_stride + c0..], out_stride, rows, width, accumulate);
                kernel(&a[r0 * a_stride..], a_stride, rows, k, panel, dst);
            }
        }
    }

    /// [`super::dot_chain`] with the FMA instruction.
    #[target_feature(enable = "avx512f,fma")]
    pub fn dot_chain(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).fold(0f32, |acc, (&x, &y)| x.mul_add(y, acc))
    }

    /// [`super::matmul_packed_rows`].
    ///
    /// # Safety
    /// `b` must have panels (AVX-512F detected) and every row of `rows` must lie inside `a`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn matmul_rows(a: &[f32], rows: &[u32], b: &PackedMat, out: &mut [f32]) {
        let (k, n) = (b.k, b.n);
        for (p, panel) in b.panels.chunks_exact(k * NR).enumerate() {
            let n0 = p * NR;
            let width = NR.min(n - n0);
            for (block, ids) in rows.chunks(MR).enumerate() {
                let r0 = block * MR;
                if p == 0 {
                    // The next block's rows start loading while this one is multiplied: they
                    // are gathered from anywhere in `a` (the hardware prefetchers cannot guess
                    // them), and the later panels find them in cache.
                    for &r in rows.get(r0 + MR..).unwrap_or_default().iter().take(MR) {
                        crate::prefetch::prefetch(&a[r as usize * k..(r as usize + 1) * k]);
                    }
                }
                let dst = Dst::new(&mut out[r0 * n + n0..], n, ids.len(), width, false);
                let mut starts = [0usize; MR];
                for (s, &r) in starts.iter_mut().zip(ids) {
                    *s = r as usize * k;
                }
                // SAFETY: every row lies inside `a` (the caller's contract).
                unsafe { kernel_rows(a, &starts, ids.len(), k, panel, dst) };
            }
        }
    }

    /// Rows starting at `a[starts[r]]` (`k` floats each, `r < rows`) times the panel into `dst`.
    ///
    /// # Safety
    /// `starts[r] + k <= a.len()` for every `r < rows`.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_rows(
        a: &[f32],
        starts: &[usize; MR],
        rows: usize,
        k: usize,
        panel: &[f32],
        dst: Dst<'_>,
    ) {
        assert!(rows <= MR && rows == dst.rows && panel.len() >= k * NR);
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        let (ap, pp) = (a.as_ptr(), panel.as_ptr());
        // Row pointers, advanced one float per step of `k`.
        let mut ptrs = [ap; MR];
        for (p, &s) in ptrs.iter_mut().zip(starts) {
            *p = ap.wrapping_add(s);
        }
        macro_rules! run {
            ($rows:expr) => {
                for t in 0..k {
                    // SAFETY: `t < k`: the panel holds `k * NR` floats (asserted above).
                    let b0 = unsafe { _mm512_loadu_ps(pp.add(t * NR)) };
                    // SAFETY: as above.
                    let b1 = unsafe { _mm512_loadu_ps(pp.add(t * NR + 16)) };
                    for r in 0..$rows {
                        // SAFETY: `r < rows`, `t < k`: inside `a` (the caller's contract).
                        let av = _mm512_set1_ps(unsafe { *ptrs[r].add(t) });
                        acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
                    }
                }
            };
        }
        // A constant row count keeps the accumulators in registers (with a variable one they
        // live in memory, at a quarter of the speed): one copy of the loop per row count.
        match rows {
            12 => run!(12),
            11 => run!(11),
            10 => run!(10),
            9 => run!(9),
            8 => run!(8),
            7 => run!(7),
            6 => run!(6),
            5 => run!(5),
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            1 => run!(1),
            _ => {}
        }
        dst.store(&acc);
    }

    /// Rows `0..rows` of `a`, `stride` floats apart, times the panel into `dst`.
    #[target_feature(enable = "avx512f")]
    fn kernel(a: &[f32], stride: usize, rows: usize, k: usize, panel: &[f32], dst: Dst<'_>) {
        assert!(rows <= MR && k <= stride);
        assert!(rows == 0 || a.len() >= (rows - 1) * stride + k);
        let mut starts = [0usize; MR];
        for (r, s) in starts.iter_mut().enumerate() {
            *s = r * stride;
        }
        // SAFETY: row `r < rows` starts at `r * stride`, and `(rows - 1) * stride + k` floats
        // are inside `a` (asserted above).
        unsafe { kernel_rows(a, &starts, rows, k, panel, dst) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_product_matches_naive() {
        for &(m, k, n) in &[(1, 1, 1), (5, 3, 40), (13, 128, 64), (32, 17, 100), (25, 8, 32)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32) * 0.25 - 2.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 11) as f32) * 0.5 - 2.5).collect();
            // Packed from a transposed view, as the searches do.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let packed = PackedMat::pack(Mat::dense(&bt, n, k).t());
            let mut out = vec![f32::NAN; m * n];
            matmul_packed(&a, m, &packed, &mut out);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                    assert!((out[i * n + j] - want).abs() <= 1e-4 * want.abs().max(1.0), "({m},{k},{n})");
                }
            }
        }
    }

    #[test]
    fn one_output_alone_has_the_bits_of_the_product() {
        for &(m, k, n) in &[(3usize, 128usize, 40usize), (13, 7, 33)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32) * 0.137 - 1.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 11) as f32) * 0.31 - 1.7).collect();
            let mut out = vec![0f32; m * n];
            matmul_packed(&a, m, &PackedMat::pack(Mat::dense(&b, k, n)), &mut out);
            for i in 0..m {
                for j in 0..n {
                    let col: Vec<f32> = (0..k).map(|t| b[t * n + j]).collect();
                    let alone = dot_chain(&a[i * k..(i + 1) * k], &col);
                    if use_avx512() {
                        assert_eq!(alone.to_bits(), out[i * n + j].to_bits(), "({m},{k},{n}) [{i},{j}]");
                    } else {
                        assert!((alone - out[i * n + j]).abs() <= 1e-4 * alone.abs().max(1.0));
                    }
                }
            }
        }
    }

    #[test]
    fn gathered_rows_give_the_bits_of_a_copy() {
        for &(rows, k, n) in &[(1usize, 1usize, 1usize), (13, 128, 32), (25, 64, 40), (40, 17, 96)] {
            let a: Vec<f32> = (0..50 * k).map(|i| ((i * 31 % 17) as f32) * 0.137 - 1.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 11) as f32) * 0.31 - 1.7).collect();
            let packed = PackedMat::pack(Mat::dense(&b, k, n));
            let ids: Vec<u32> = (0..rows).map(|i| ((i * 37 + 5) % 50) as u32).collect();
            let copy: Vec<f32> = ids.iter().flat_map(|&r| a[r as usize * k..][..k].to_vec()).collect();
            let mut want = vec![0f32; rows * n];
            matmul_packed(&copy, rows, &packed, &mut want);
            let mut got = vec![f32::NAN; rows * n];
            matmul_packed_rows(&a, &ids, &packed, &mut got);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "({rows},{k},{n})");
        }
    }

    #[test]
    fn strided_product_of_repacked_panels_matches_the_packed_one() {
        if !use_avx512() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        for &(m, k, n, a_stride, out_stride) in &[(37, 32, 45, 96, 50), (13, 200, 32, 384, 40)] {
            let a: Vec<f32> = (0..m * a_stride).map(|i| ((i * 31 % 17) as f32) * 0.25 - 2.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 11) as f32) * 0.5 - 2.5).collect();
            let dense_a: Vec<f32> = (0..m).flat_map(|i| a[i * a_stride..][..k].to_vec()).collect();
            let mut want = vec![0f32; m * n];
            matmul_packed(&dense_a, m, &PackedMat::pack(Mat::dense(&b, k, n)), &mut want);
            let mut packed = PackedMat::default();
            packed.repack_panels(k, n, |r, c| b[r * n + c]);
            let mut got = vec![0.5f32; m * out_stride];
            matmul_panels(&a, a_stride, m, &packed, &mut got, out_stride, true);
            for i in 0..m {
                let row = &got[i * out_stride..(i + 1) * out_stride];
                for j in 0..n {
                    assert_eq!(row[j], want[i * n + j] + 0.5, "({m},{k},{n}) [{i},{j}]");
                }
                assert!(row[n..].iter().all(|&x| x == 0.5), "row {i} padding");
            }
        }
    }
}
