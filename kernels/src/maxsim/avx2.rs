//! AVX2 + FMA + F16C MaxSim kernel: 6 document rows × 16 query tokens (12 ymm accumulators)
//! per tile, leaving room in the 16 ymm registers for the two query vectors and a broadcast.

use core::arch::x86_64::*;

use half::f16;

use super::{check_shapes, Doc, Panel, STRIP};

/// Document rows per block.
const ROWS: usize = 6;

/// Fills `best[..strips·16]` with each query token's maximum dot product over the document.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Shapes are checked (panicking on mismatch); the
/// document must be non-empty for `best` to hold real maxima.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn maxsim(panel: Panel<'_>, doc: Doc<'_>, scratch: &mut [f32], best: &mut [f32]) {
    let n = check_shapes(&panel, doc, scratch, ROWS, best);
    let dim = panel.dim;
    best.fill(f32::NEG_INFINITY);
    let mut start = 0;
    while start < n {
        let count = ROWS.min(n - start);
        let rows_f32: &[f32] = match doc {
            Doc::F16(d) => {
                let src = &d[start * dim..(start + count) * dim];
                let dst = &mut scratch[..count * dim];
                // SAFETY: this function's caller guarantees F16C.
                unsafe { widen(src, dst) };
                dst
            }
            Doc::F32(d) => &d[start * dim..(start + count) * dim],
        };
        // Row pointers; a short block repeats its last row, which leaves every maximum unchanged.
        let mut rows = [rows_f32.as_ptr(); ROWS];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = rows_f32[r.min(count - 1) * dim..].as_ptr();
        }
        for s in 0..panel.strips {
            let q = panel.packed[s * dim * STRIP..(s + 1) * dim * STRIP].as_ptr();
            let out = best[s * STRIP..(s + 1) * STRIP].as_mut_ptr();
            // SAFETY: `q` covers one strip (dim·16 floats), `out` 16 floats, and every row
            // pointer `dim` floats (checked by the slicing above); AVX2 and FMA per the caller.
            unsafe { tile(q, dim, &rows, out) };
        }
        start += count;
    }
}

/// Widens f16 values to f32, 8 at a time, then one by one.
///
/// # Safety
/// The CPU must support F16C and AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` keeps both 8-element accesses in bounds; loads and stores are
        // unaligned; f16 is a 2-byte plain value so 8 of them are one 128-bit load.
        unsafe {
            let h = _mm_loadu_si128(s.add(i).cast());
            _mm256_storeu_ps(d.add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for (x, y) in src[i..].iter().zip(&mut dst[i..]) {
        *y = x.to_f32();
    }
}

/// One register tile: one packed strip (16 query tokens, two ymm) against `ROWS` document rows;
/// folds the rows' dot products into `best[..16]` with `max`.
///
/// # Safety
/// The CPU must support AVX2 and FMA. `q` must be valid for `dim·16` reads, each `rows[r]` for
/// `dim` reads, and `best` for 16 reads and writes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over fixed register arrays read best here
unsafe fn tile(q: *const f32, dim: usize, rows: &[*const f32; ROWS], best: *mut f32) {
    let mut lo = [_mm256_setzero_ps(); ROWS];
    let mut hi = [_mm256_setzero_ps(); ROWS];
    for k in 0..dim {
        // SAFETY: dimension k of the strip is the 16 floats at k·16 < dim·16.
        let (q0, q1) = unsafe { (_mm256_loadu_ps(q.add(k * STRIP)), _mm256_loadu_ps(q.add(k * STRIP + 8))) };
        for r in 0..ROWS {
            // SAFETY: k < dim and every row pointer is valid for dim reads.
            let x = _mm256_set1_ps(unsafe { *rows[r].add(k) });
            lo[r] = _mm256_fmadd_ps(q0, x, lo[r]);
            hi[r] = _mm256_fmadd_ps(q1, x, hi[r]);
        }
    }
    let (mut m0, mut m1) = (lo[0], hi[0]);
    for r in 1..ROWS {
        m0 = _mm256_max_ps(m0, lo[r]);
        m1 = _mm256_max_ps(m1, hi[r]);
    }
    // SAFETY: `best` is valid for 16 floats.
    unsafe {
        _mm256_storeu_ps(best, _mm256_max_ps(_mm256_loadu_ps(best), m0));
        _mm256_storeu_ps(best.add(8), _mm256_max_ps(_mm256_loadu_ps(best.add(8)), m1));
    }
}
