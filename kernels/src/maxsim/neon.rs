//! aarch64 NEON MaxSim kernel: 6 document rows × 16 query tokens (24 q-register accumulators)
//! per tile. The same blocking as the AVX2 kernel with 4-lane vectors; f16 rows are widened
//! with `half`'s slice conversion.
//!
//! Not compiled on the x86_64 development machine: keep it a line-for-line mirror of `avx2.rs`.

use core::arch::aarch64::*;

use half::slice::HalfFloatSliceExt;

use super::{check_shapes, Doc, Panel, STRIP};

/// Document rows per block.
const ROWS: usize = 6;

/// f32 lanes per q register.
const LANES: usize = 4;

/// q registers per strip of 16 query tokens.
const NV: usize = STRIP / LANES;

/// Fills `best[..strips·16]` with each query token's maximum dot product over the document.
///
/// # Safety
/// The CPU must support NEON. Shapes are checked (panicking on mismatch); the document must be
/// non-empty for `best` to hold real maxima.
#[target_feature(enable = "neon")]
pub(super) unsafe fn maxsim(panel: Panel<'_>, doc: Doc<'_>, scratch: &mut [f32], best: &mut [f32]) {
    let n = check_shapes(&panel, doc, scratch, ROWS, best);
    let dim = panel.dim;
    best.fill(f32::NEG_INFINITY);
    let mut start = 0;
    while start < n {
        let count = ROWS.min(n - start);
        let rows_f32: &[f32] = match doc {
            Doc::F16(d) => {
                let dst = &mut scratch[..count * dim];
                d[start * dim..(start + count) * dim].convert_to_f32_slice(dst);
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
            // pointer `dim` floats (checked by the slicing above); NEON per the caller.
            unsafe { tile(q, dim, &rows, out) };
        }
        start += count;
    }
}

/// One register tile: one packed strip (16 query tokens, four q registers) against `ROWS`
/// document rows; folds the rows' dot products into `best[..16]` with `max`.
///
/// # Safety
/// The CPU must support NEON. `q` must be valid for `dim·16` reads, each `rows[r]` for `dim`
/// reads, and `best` for 16 reads and writes.
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)] // index loops over fixed register arrays read best here
unsafe fn tile(q: *const f32, dim: usize, rows: &[*const f32; ROWS], best: *mut f32) {
    let mut acc = [[vdupq_n_f32(0.0); NV]; ROWS];
    for k in 0..dim {
        let mut qv = [vdupq_n_f32(0.0); NV];
        for v in 0..NV {
            // SAFETY: lanes v·4..v·4+4 of dimension k sit at k·16 + v·4 + 4 <= dim·16.
            qv[v] = unsafe { vld1q_f32(q.add(k * STRIP + v * LANES)) };
        }
        for r in 0..ROWS {
            // SAFETY: k < dim and every row pointer is valid for dim reads.
            let x = vdupq_n_f32(unsafe { *rows[r].add(k) });
            for v in 0..NV {
                acc[r][v] = vfmaq_f32(acc[r][v], qv[v], x);
            }
        }
    }
    for v in 0..NV {
        let mut m = acc[0][v];
        for r in 1..ROWS {
            m = vmaxq_f32(m, acc[r][v]);
        }
        // SAFETY: v·4 + 4 <= 16 floats of `best`.
        unsafe {
            let p = best.add(v * LANES);
            vst1q_f32(p, vmaxq_f32(vld1q_f32(p), m));
        }
    }
}
