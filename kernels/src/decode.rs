//! Decoding of residual-compressed tokens: `token = centroid + table rows of its code bytes`,
//! optionally renormalised, with an AVX-512 body that is bit-identical to the portable one.
//!
//! The tables come from the engine's codec: for `nbits` bits per dimension a byte holds
//! `g = 8 / nbits` dimensions, and byte value `b` at byte position `p` decodes to the `g` floats
//! at `lut[(p · 256 + b) · g ..]` (per-dimension tables) or `lut[b · g ..]` (one pooled table).

/// A codec's decoding table, as the decoding kernels read it.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    /// The table rows (see the module docs).
    pub lut: &'a [f32],
    /// Dimensions per token.
    pub dim: usize,
    /// Bits per dimension: 1, 2 or 4.
    pub nbits: u32,
    /// One table per byte position (else one pooled table).
    pub per_dim: bool,
}

impl Table<'_> {
    /// Bytes per token.
    pub fn packed_len(&self) -> usize {
        self.dim * self.nbits as usize / 8
    }
}

/// Decodes one token: `out = centroid + table rows of packed`. Does not renormalise. The
/// caller checks the lengths (`packed`: [`Table::packed_len`], `centroid` and `out`: `dim`).
pub fn decode_one(t: &Table<'_>, packed: &[u8], centroid: &[f32], out: &mut [f32]) {
    match t.nbits {
        1 => decode_g::<8>(t, packed, centroid, out),
        2 => decode_g::<4>(t, packed, centroid, out),
        _ => decode_g::<2>(t, packed, centroid, out),
    }
}

/// What [`decode_rows`] does to each decoded token (`centroid + residual`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm<'a> {
    /// Nothing: the decoded vector as is.
    Keep,
    /// Scaled to unit L2 norm, computed from the decoded vector ([`normalize`]).
    Unit,
    /// Multiplied by the token's factor (one per token: an index's stored inverse norms).
    Scale(&'a [half::f16]),
}

/// Decodes `codes.len()` tokens: token `i` from `packed[i * packed_len()..]` against row
/// `codes[i]` of `centroids` (`[n, dim]` row-major) into row `i` of `out`, then applies `norm`;
/// the same bits as [`decode_one`] then [`normalize`] (or the multiplication by the token's
/// factor) per token, compiled for AVX-512 where the CPU has it. The caller checks the shapes
/// and that every code is inside `centroids` (panics otherwise: an internal invariant).
pub fn decode_rows(
    t: &Table<'_>,
    packed: &[u8],
    codes: &[u32],
    centroids: &[f32],
    norm: Norm<'_>,
    out: &mut [f32],
) {
    let (n, d) = (codes.len(), t.dim);
    assert!(packed.len() == n * t.packed_len() && out.len() == n * d, "decode_rows: shapes");
    if let Norm::Scale(s) = norm {
        assert_eq!(s.len(), n, "decode_rows: one factor per token");
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
    if crate::cpu::Features::get().avx512 {
        // SAFETY: AVX-512F (with AVX2 and FMA) was detected at run time.
        unsafe { decode_rows_avx512(t, packed, codes, centroids, norm, out) };
        return;
    }
    decode_rows_portable(t, packed, codes, centroids, norm, out);
}

/// [`decode_rows_portable`] with AVX-512: each 16 output floats are assembled from the
/// table rows of their `16 / g` bytes in one register, added to the centroid, and squared
/// into 16 lanes in the order [`dot`] uses, so the result is bit-identical. Dimensions that
/// are not a multiple of 16 take the portable body.
#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
#[target_feature(enable = "avx512f,avx2,fma")]
fn decode_rows_avx512(
    t: &Table<'_>,
    packed: &[u8],
    codes: &[u32],
    centroids: &[f32],
    norm: Norm<'_>,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (d, pl) = (t.dim, t.packed_len());
    if !d.is_multiple_of(16) {
        return decode_rows_portable(t, packed, codes, centroids, norm, out);
    }
    let g = 8 / t.nbits as usize;
    let stride = if t.per_dim { 256 * g } else { 0 };
    assert!(t.lut.len() >= if t.per_dim { pl * 256 * g } else { 256 * g }, "decoding table");
    let (lut, per_vector) = (t.lut.as_ptr(), 16 / g);
    for (i, ((&code, p), o)) in
        codes.iter().zip(packed.chunks_exact(pl)).zip(out.chunks_exact_mut(d)).enumerate()
    {
        // Centroid rows are read in code order, all over the table: fetch a few tokens ahead.
        if let Some(&ahead) = codes.get(i + PREFETCH_TOKENS) {
            let base = centroids.as_ptr().wrapping_add(ahead as usize * d);
            for line in (0..d).step_by(16) {
                // A prefetch is a hint: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(line) as *const i8);
            }
        }
        let c = &centroids[code as usize * d..(code as usize + 1) * d];
        // Table row of byte position `pos`: `g` floats, inside the table (asserted above:
        // `pos < pl`, and a byte indexes one of its 256 rows).
        let row = |pos: usize| lut.wrapping_add(pos * stride + p[pos] as usize * g);
        let mut squares = _mm512_setzero_ps();
        for v in 0..d / 16 {
            let first = v * per_vector;
            // SAFETY: each load reads `g` floats of one table row (see `row`), or 16 floats
            // of `c` / `o` at `v * 16 < d`.
            unsafe {
                let e = match g {
                    8 => _mm512_castpd_ps(_mm512_insertf64x4(
                        _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(row(first)))),
                        _mm256_castps_pd(_mm256_loadu_ps(row(first + 1))),
                        1,
                    )),
                    4 => _mm512_insertf32x4(
                        _mm512_insertf32x4(
                            _mm512_insertf32x4(
                                _mm512_castps128_ps512(_mm_loadu_ps(row(first))),
                                _mm_loadu_ps(row(first + 1)),
                                1,
                            ),
                            _mm_loadu_ps(row(first + 2)),
                            2,
                        ),
                        _mm_loadu_ps(row(first + 3)),
                        3,
                    ),
                    _ => {
                        let pair = |j: usize| (row(first + j) as *const i64).read_unaligned();
                        _mm512_castsi512_ps(_mm512_set_epi64(
                            pair(7),
                            pair(6),
                            pair(5),
                            pair(4),
                            pair(3),
                            pair(2),
                            pair(1),
                            pair(0),
                        ))
                    }
                };
                let x = _mm512_add_ps(_mm512_loadu_ps(c.as_ptr().add(v * 16)), e);
                _mm512_storeu_ps(o.as_mut_ptr().add(v * 16), x);
                squares = _mm512_add_ps(squares, _mm512_mul_ps(x, x));
            }
        }
        let factor = match norm {
            Norm::Keep => None,
            Norm::Scale(s) => Some(s[i].to_f32()),
            Norm::Unit => {
                let mut lanes = [0f32; 16];
                // SAFETY: `lanes` holds 16 floats.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), squares) };
                let empty_tail: f32 = [0f32; 0].iter().sum();
                let norm = (lanes.iter().sum::<f32>() + empty_tail).sqrt();
                (norm > 0.0).then(|| 1.0 / norm)
            }
        };
        if let Some(f) = factor {
            let inv = _mm512_set1_ps(f);
            for v in o.chunks_exact_mut(16) {
                // SAFETY: `v` holds 16 floats.
                unsafe { _mm512_storeu_ps(v.as_mut_ptr(), _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr()), inv)) };
            }
        }
    }
}

/// The portable body of [`decode_rows`] (shapes already checked).
#[inline(always)]
fn decode_rows_portable(
    t: &Table<'_>,
    packed: &[u8],
    codes: &[u32],
    centroids: &[f32],
    norm: Norm<'_>,
    out: &mut [f32],
) {
    let (d, pl) = (t.dim, t.packed_len());
    for (i, ((&code, p), o)) in
        codes.iter().zip(packed.chunks_exact(pl)).zip(out.chunks_exact_mut(d)).enumerate()
    {
        let centroid = &centroids[code as usize * d..(code as usize + 1) * d];
        match t.nbits {
            1 => decode_g::<8>(t, p, centroid, o),
            2 => decode_g::<4>(t, p, centroid, o),
            _ => decode_g::<2>(t, p, centroid, o),
        }
        match norm {
            Norm::Keep => {}
            Norm::Unit => normalize(o),
            Norm::Scale(s) => {
                let f = s[i].to_f32();
                o.iter_mut().for_each(|x| *x *= f);
            }
        }
    }
}

#[inline(always)]
fn decode_g<const G: usize>(t: &Table<'_>, packed: &[u8], centroid: &[f32], out: &mut [f32]) {
    let stride = if t.per_dim { 256 * G } else { 0 };
    for (p, ((&byte, o), c)) in
        packed.iter().zip(out.chunks_exact_mut(G)).zip(centroid.chunks_exact(G)).enumerate()
    {
        let base = p * stride + byte as usize * G;
        let e: &[f32; G] = t.lut[base..base + G].try_into().expect("table row");
        for ((o, &c), &e) in o.iter_mut().zip(c).zip(e) {
            *o = c + e;
        }
    }
}

/// How many tokens ahead [`decode_rows`] prefetches centroid rows.
#[cfg(all(target_arch = "x86_64", not(feature = "scalar-only")))]
const PREFETCH_TOKENS: usize = 4;

/// Dot product of two equal-length slices. It sums in 16 independent lanes, so that it
/// vectorises (a single running sum is one long dependency chain).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Scales `v` to unit L2 norm (a zero vector stays zero): how decoded tokens of a unit-norm index
/// are renormalised.
#[inline(always)]
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}
