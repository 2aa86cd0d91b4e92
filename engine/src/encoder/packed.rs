//! An f32 matrix product against a right-hand side packed once and reused: the centroid matrix
//! of a compressed index (stage 1 of PLAID scores every query against it) and a query's
//! transpose (stage 4 scores many documents against it). Packing a 4 MiB centroid matrix on
//! every call, as a general-purpose product must, costs as much as the product itself.
//!
//! `B` (`[k, n]`) is stored as panels of [`NR`] columns, each panel `k` rows of `NR` floats, so
//! the AVX-512 micro-kernel streams a panel with two aligned-size loads per `k` and broadcasts
//! one `A` value per row. Without AVX-512 the product goes to the general kernel in
//! [`super::ops::matmul`] on the unpacked copy.

use super::ops::{matmul, Mat};

/// Output columns per panel (two 16-lane vectors).
const NR: usize = 32;
/// Rows per micro-kernel call.
const MR: usize = 12;

/// A right-hand side `[k, n]` packed for [`matmul_packed`].
#[derive(Debug, Clone)]
pub(crate) struct PackedMat {
    k: usize,
    n: usize,
    /// Row-major `[k, n]` copy for the portable path.
    dense: Vec<f32>,
    /// `ceil(n / NR)` panels of `k × NR` floats (zero-padded columns), when AVX-512 is used.
    panels: Vec<f32>,
}

fn use_avx512() -> bool {
    #[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(target_arch = "x86_64", not(feature = "scalar-only"))))]
    {
        false
    }
}

impl PackedMat {
    /// Packs `b`, a `[k, n]` view (any strides).
    pub(crate) fn pack(b: Mat<'_>) -> PackedMat {
        let (k, n) = (b.rows, b.cols);
        let at = |r: usize, c: usize| b.data[r * b.row_stride + c * b.col_stride];
        let dense: Vec<f32> =
            (0..k).flat_map(|r| (0..n).map(move |c| (r, c))).map(|(r, c)| at(r, c)).collect();
        let mut panels = Vec::new();
        if use_avx512() {
            panels = vec![0f32; n.div_ceil(NR) * k * NR];
            for (p, panel) in panels.chunks_exact_mut(k * NR).enumerate() {
                for r in 0..k {
                    for c in 0..NR.min(n - p * NR) {
                        panel[r * NR + c] = dense[r * n + p * NR + c];
                    }
                }
            }
        }
        PackedMat { k, n, dense, panels }
    }

    /// Columns.
    pub(crate) fn n(&self) -> usize {
        self.n
    }
}

/// `out = a · b` on the calling thread: `a` is `[m, b.k()]` row-major, `out` `[m, b.n()]`
/// row-major. Panics on shape mismatch (an internal invariant).
pub(crate) fn matmul_packed(a: &[f32], m: usize, b: &PackedMat, out: &mut [f32]) {
    assert_eq!(a.len(), m * b.k, "matmul_packed: lhs shape");
    assert_eq!(out.len(), m * b.n, "matmul_packed: output shape");
    #[cfg(target_arch = "x86_64")]
    if !b.panels.is_empty() {
        // SAFETY: panels are only built after AVX-512F was detected at run time.
        unsafe { x86::matmul(a, m, b, out) };
        return;
    }
    matmul(Mat::dense(a, m, b.k), Mat::dense(&b.dense, b.k, b.n), out, b.n, false, 1.0);
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PackedMat, MR, NR};

    #[target_feature(enable = "avx512f")]
    pub(super) fn matmul(a: &[f32], m: usize, b: &PackedMat, out: &mut [f32]) {
        let (k, n) = (b.k, b.n);
        let mut tile = [0f32; MR * NR];
        for (p, panel) in b.panels.chunks_exact(k * NR).enumerate() {
            let n0 = p * NR;
            let width = NR.min(n - n0);
            for r0 in (0..m).step_by(MR) {
                let rows = MR.min(m - r0);
                kernel(&a[r0 * k..(r0 + rows) * k], rows, k, panel, &mut tile);
                for r in 0..rows {
                    out[(r0 + r) * n + n0..][..width].copy_from_slice(&tile[r * NR..r * NR + width]);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn kernel(a: &[f32], rows: usize, k: usize, panel: &[f32], tile: &mut [f32; MR * NR]) {
        assert!(a.len() >= rows * k && panel.len() >= k * NR && rows <= MR);
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        let (ap, pp) = (a.as_ptr(), panel.as_ptr());
        macro_rules! run {
            ($rows:expr) => {
                for t in 0..k {
                    // SAFETY: `t < k`: the panel holds `k * NR` floats (asserted above).
                    let (b0, b1) =
                        unsafe { (_mm512_loadu_ps(pp.add(t * NR)), _mm512_loadu_ps(pp.add(t * NR + 16))) };
                    for r in 0..$rows {
                        // SAFETY: `r < rows`, `t < k`: inside `a` (asserted above).
                        let av = _mm512_set1_ps(unsafe { *ap.add(r * k + t) });
                        acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
                    }
                }
            };
        }
        // A constant row count keeps the accumulators in registers.
        if rows == MR {
            run!(MR);
        } else {
            run!(rows);
        }
        for r in 0..rows {
            // SAFETY: `r < MR`: both 16-float stores stay inside `tile`.
            unsafe {
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), acc[2 * r]);
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), acc[2 * r + 1]);
            }
        }
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
}
