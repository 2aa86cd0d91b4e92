//! AVX-512F MaxSim kernel: 8 document rows × 32 query tokens (16 zmm accumulators) per tile.

use core::arch::x86_64::*;

use half::f16;

use super::{check_shapes, Doc, Panel, STRIP};

/// Document rows per block.
const ROWS: usize = 8;

/// Fills `best[..strips·16]` with each query token's maximum dot product over the document.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C. Shapes are checked (panicking on mismatch);
/// the document must be non-empty for `best` to hold real maxima.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
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
                // SAFETY: this function's caller guarantees AVX-512F and F16C.
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
        let mut s = 0;
        while s + 2 <= panel.strips {
            let q = panel.packed[s * dim * STRIP..(s + 2) * dim * STRIP].as_ptr();
            let out = best[s * STRIP..(s + 2) * STRIP].as_mut_ptr();
            // SAFETY: `q` covers two strips (2·dim·16 floats), `out` 32 floats, and every row
            // pointer `dim` floats (checked by the slicing above); AVX-512F per the caller.
            unsafe { tile::<2>(q, dim, &rows, out) };
            s += 2;
        }
        if s < panel.strips {
            let q = panel.packed[s * dim * STRIP..(s + 1) * dim * STRIP].as_ptr();
            let out = best[s * STRIP..(s + 1) * STRIP].as_mut_ptr();
            // SAFETY: as above, for one strip of 16 query tokens.
            unsafe { tile::<1>(q, dim, &rows, out) };
        }
        start += count;
    }
}

/// Widens f16 values to f32, 16 at a time, then 8, then one by one.
///
/// # Safety
/// The CPU must support AVX-512F and F16C.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn widen(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n` keeps both 16-element accesses in bounds; loads and stores are
        // unaligned; f16 is a 2-byte plain value so 16 of them are one 256-bit load.
        unsafe {
            let h = _mm256_loadu_si256(s.add(i).cast());
            _mm512_storeu_ps(d.add(i), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    if i + 8 <= n {
        // SAFETY: `i + 8 <= n`, as above with 8 elements.
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

/// One register tile: `NV` zmm vectors of query lanes (16·NV query tokens) against `ROWS`
/// document rows; folds the rows' dot products into `best[..16·NV]` with `max`.
///
/// # Safety
/// The CPU must support AVX-512F. `q` must be valid for `NV·dim·16` reads (NV consecutive packed
/// strips), each `rows[r]` for `dim` reads, and `best` for `16·NV` reads and writes.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over fixed register arrays read best here
unsafe fn tile<const NV: usize>(q: *const f32, dim: usize, rows: &[*const f32; ROWS], best: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); NV]; ROWS];
    for k in 0..dim {
        let mut qv = [_mm512_setzero_ps(); NV];
        for v in 0..NV {
            // SAFETY: strip v's dimension k sits at (v·dim + k)·16 < NV·dim·16.
            qv[v] = unsafe { _mm512_loadu_ps(q.add((v * dim + k) * STRIP)) };
        }
        for r in 0..ROWS {
            // SAFETY: k < dim and every row pointer is valid for dim reads.
            let x = _mm512_set1_ps(unsafe { *rows[r].add(k) });
            for v in 0..NV {
                acc[r][v] = _mm512_fmadd_ps(qv[v], x, acc[r][v]);
            }
        }
    }
    for v in 0..NV {
        let mut m = acc[0][v];
        for r in 1..ROWS {
            m = _mm512_max_ps(m, acc[r][v]);
        }
        // SAFETY: v·16 + 16 <= 16·NV floats of `best`.
        unsafe {
            let p = best.add(v * STRIP);
            _mm512_storeu_ps(p, _mm512_max_ps(_mm512_loadu_ps(p), m));
        }
    }
}
