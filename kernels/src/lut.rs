//! Scoring residual-compressed tokens without decompressing them: per-query lookup tables
//! ("implicit decompression", as in WARP).
//!
//! A compressed token is its centroid `c` plus a residual whose byte `p` (value `b`) decodes to
//! the `g = 8 / nbits` floats of a codec table row `w(p, b)` (see [`crate::decode`]). Its dot
//! product with a query token `q` is therefore
//!
//! ```text
//! q·x = q·c + Σ_p T[p][b_p][q],   T[p][b][q] = Σ_j q[p·g + j] · w(p, b)[j]
//! ```
//!
//! [`QueryTables::fill`] computes `T` once per query (`positions × 256` rows of one float per
//! query token: 1 MiB for 32 query tokens at dim 128, nbits 2), and [`maxsim`] scores a
//! document's tokens with one table row per byte instead of `dim` multiply-adds per query token:
//! each token costs `positions` vector additions of its rows plus its centroid's score row.
//! When an index renormalises decoded tokens, the token's score is multiplied by its stored
//! inverse norm.
//!
//! Every path adds in the same order (the centroid score, then the rows by byte position, then
//! the scaling), lane by lane, so the SIMD kernels return the portable one's bits exactly.

use crate::decode::Table;
use crate::detect::Isa;
use crate::maxsim::Kernel;

/// Query tokens are padded to a multiple of this many lanes (one AVX-512 register of i16).
pub const LANE_GROUP: usize = 32;

/// Most lanes [`maxsim`] keeps in registers at once (two AVX-512 registers of i16).
const GROUP_LANES: usize = 64;

/// The lookup tables of one query: `positions × 256` rows of [`QueryTables::lanes`] values,
/// row `(p, b)` holding `T[p][b][q]` for every query token `q` (zero past the last), stored as
/// i16 multiples of a per-query-token step.
///
/// The step of query token `q` is `Σ_p max_b |T[p][b][q]| / (32767 − positions)`, so that
/// the sum of any token's `positions` rounded entries fits an i16 and the adds never wrap; a
/// rounded entry is off by at most half a step, so a token's table sum by at most
/// `positions / 2` steps (in practice about `√positions / 2`): around 1e-3 of the largest
/// possible residual term, far below the residuals' own quantisation error.
#[derive(Debug, Clone, Default)]
pub struct QueryTables {
    nq: usize,
    lanes: usize,
    positions: usize,
    /// The rounded tables from element `offset` on (64-byte aligned: every row of 32 lanes is
    /// one cache line).
    values: Vec<i16>,
    offset: usize,
    step: Vec<f32>,
    /// One byte position's table in f32 before rounding (kept to reuse the allocation).
    exact: Vec<f32>,
}

impl QueryTables {
    /// Empty tables; [`QueryTables::fill`] sizes them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills the tables for `query` (row-major `nq × dim`) and the codec table `t`, reusing the
    /// allocation.
    ///
    /// # Panics
    /// If `query` is not `nq × t.dim` floats, or the codec table is too short for its layout.
    pub fn fill(&mut self, t: &Table<'_>, query: &[f32], nq: usize) {
        // The same arithmetic (no fused multiply-adds) compiled for wider vectors where the CPU
        // has them: the same bits on every path.
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Isa::get();
            if isa.avx512bw {
                // SAFETY: AVX-512F and BW were detected at run time.
                return unsafe { self.fill_avx512(t, query, nq) };
            }
            if isa.avx2 {
                // SAFETY: AVX2 was detected at run time.
                return unsafe { self.fill_avx2(t, query, nq) };
            }
        }
        self.fill_body(t, query, nq)
    }

    /// [`QueryTables::fill`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and BW.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fill_avx512(&mut self, t: &Table<'_>, query: &[f32], nq: usize) {
        self.fill_body(t, query, nq)
    }

    /// [`QueryTables::fill`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&mut self, t: &Table<'_>, query: &[f32], nq: usize) {
        self.fill_body(t, query, nq)
    }

    #[inline(always)]
    fn fill_body(&mut self, t: &Table<'_>, query: &[f32], nq: usize) {
        let dim = t.dim;
        assert_eq!(query.len(), nq * dim, "query shape");
        let g = 8 / t.nbits as usize;
        let positions = t.packed_len();
        assert!(t.lut.len() >= if t.per_dim { positions * 256 * g } else { 256 * g }, "decoding table");
        assert!(positions < 16384, "too many byte positions per token");
        let lanes = nq.div_ceil(LANE_GROUP).max(1) * LANE_GROUP;
        // The query transposed: dimension-major, `lanes` values per dimension.
        let mut qt = vec![0f32; dim * lanes];
        for (i, token) in query.chunks_exact(dim).enumerate() {
            for (d, &x) in token.iter().enumerate() {
                qt[d * lanes + i] = x;
            }
        }
        // The tables in f32, one position at a time into a buffer that stays in the L1 cache:
        // a first pass finds each lane's largest entries (hence its step), a second computes the
        // same entries again and rounds them. Recomputing costs less than writing the whole
        // f32 tables out and reading them back.
        let stride = if t.per_dim { 256 * g } else { 0 };
        // Every element is written before it is read: no need to zero a reused buffer.
        let mut block = std::mem::take(&mut self.exact);
        block.resize(256 * lanes, 0.0);
        // (A macro, not a closure: a closure would not be compiled with the caller's target
        // features.)
        macro_rules! position {
            ($p:expr, $block:expr, $largest:expr) => {{
                let p = $p;
                let table = &t.lut[p * stride..p * stride + 256 * g];
                let cols = &qt[p * g * lanes..(p + 1) * g * lanes];
                match lanes {
                    // The usual shapes with the codeword length `g` a constant too, so that a
                    // row's terms unroll.
                    32 if g == 4 => $largest.copy_from_slice(&position_block::<32, 4>(table, cols, $block)),
                    32 if g == 8 => $largest.copy_from_slice(&position_block::<32, 8>(table, cols, $block)),
                    32 if g == 2 => $largest.copy_from_slice(&position_block::<32, 2>(table, cols, $block)),
                    64 if g == 4 => $largest.copy_from_slice(&position_block::<64, 4>(table, cols, $block)),
                    64 if g == 8 => $largest.copy_from_slice(&position_block::<64, 8>(table, cols, $block)),
                    64 if g == 2 => $largest.copy_from_slice(&position_block::<64, 2>(table, cols, $block)),
                    _ => position_block_any(table, cols, g, lanes, $block, $largest),
                }
            }};
        }
        let mut bound = vec![0f32; lanes];
        // The largest magnitude in each lane of the position last computed.
        let mut largest = vec![0f32; lanes];
        for p in 0..positions {
            position!(p, &mut block, &mut largest);
            for (b, &m) in bound.iter_mut().zip(&largest) {
                *b += m;
            }
        }
        let budget = (i16::MAX as usize - positions) as f32;
        self.step.clear();
        self.step.extend(bound.iter().map(|&b| if b > 0.0 && b.is_finite() { b / budget } else { 0.0 }));
        let inv: Vec<f32> = self.step.iter().map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 }).collect();
        let len = positions * 256 * lanes;
        // Not cleared: every value past the padding is written below, and a buffer of the same
        // size is reused without being zeroed again.
        self.values.reserve((len + 32).saturating_sub(self.values.len()));
        // Pad the front so that the tables start on a 64-byte boundary.
        let misalignment = (self.values.as_ptr() as usize % 64) / 2;
        self.offset = (32 - misalignment) % 32;
        self.values.resize(self.offset + len, 0);
        let (offset, values) = (self.offset, &mut self.values);
        for (p, out) in values[offset..].chunks_exact_mut(256 * lanes).enumerate() {
            position!(p, &mut block, &mut largest);
            for (row, out) in block.chunks_exact(lanes).zip(out.chunks_exact_mut(lanes)) {
                // |value| · inv ≤ budget < 2^15 by construction. Adding 1.5 · 2^23 rounds it to
                // the nearest integer (ties to even) and leaves that integer in the low bits of
                // the sum's representation, read back with integer operations that vectorise
                // (`round` is a library call, and a float-to-integer cast checks for saturation).
                const MAGIC: f32 = 12_582_912.0;
                let base = MAGIC.to_bits() as i32;
                for ((o, &v), &i) in out.iter_mut().zip(row).zip(&inv) {
                    *o = ((v * i + MAGIC).to_bits() as i32).wrapping_sub(base) as i16;
                }
            }
        }
        let exact = block;
        self.exact = exact;
        self.nq = nq;
        self.lanes = lanes;
        self.positions = positions;
    }

    /// Query tokens.
    pub fn nq(&self) -> usize {
        self.nq
    }

    /// Values per table row: the query tokens rounded up to [`LANE_GROUP`].
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Byte positions per token (the codec's packed length).
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// The rounded table values, `positions × 256 × lanes`.
    pub fn values(&self) -> &[i16] {
        &self.values[self.offset..]
    }

    /// The value of one step of each lane.
    pub fn step(&self) -> &[f32] {
        &self.step
    }
}

/// One position's 256 table rows of `L` lanes (codewords of `G` floats) into `out`: row `b` is `Σ_j w(b)[j] · qt[j]`
/// (a multiplication and an addition per term, from zero, in `j` order), accumulated in
/// registers (a row of runtime length would be reloaded and stored once per term). Returns each
/// lane's largest magnitude.
#[inline(always)]
fn position_block<const L: usize, const G: usize>(table: &[f32], cols: &[f32], out: &mut [f32]) -> [f32; L] {
    for (row, w) in out.chunks_exact_mut(L).zip(table.chunks_exact(G)) {
        let mut acc = [0f32; L];
        for (&w, col) in w.iter().zip(cols.chunks_exact(L)) {
            let col: &[f32; L] = col.try_into().expect("L lanes");
            for (a, &q) in acc.iter_mut().zip(col) {
                *a += w * q;
            }
        }
        row.copy_from_slice(&acc);
    }
    // A separate pass over the block (in the L1 cache): folded into the loop above, the
    // accumulation no longer vectorises.
    let mut largest = [0f32; L];
    for row in out.chunks_exact(L) {
        let row: &[f32; L] = row.try_into().expect("L lanes");
        for (m, &a) in largest.iter_mut().zip(row) {
            // (A comparison, not `f32::max`, whose NaN rule costs two more instructions: the
            // entries are finite.)
            *m = if a.abs() > *m { a.abs() } else { *m };
        }
    }
    largest
}

/// [`position_block`] for any number of lanes (the largest magnitudes into `largest`).
#[inline(always)]
fn position_block_any(
    table: &[f32],
    cols: &[f32],
    g: usize,
    lanes: usize,
    out: &mut [f32],
    largest: &mut [f32],
) {
    largest.fill(0.0);
    for (row, w) in out.chunks_exact_mut(lanes).zip(table.chunks_exact(g)) {
        row.fill(0.0);
        for (&w, col) in w.iter().zip(cols.chunks_exact(lanes)) {
            for (r, &q) in row.iter_mut().zip(col) {
                *r += w * q;
            }
        }
        for (m, &a) in largest.iter_mut().zip(row.iter()) {
            *m = m.max(a.abs());
        }
    }
}

/// One document's compressed tokens, as [`maxsim`] reads them.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    /// The packed residual rows, [`QueryTables::positions`] bytes per token.
    pub packed: &'a [u8],
    /// Per token, the row of the centroid scores holding its centroid's score against every
    /// query token.
    pub rows: &'a [u32],
    /// Per token, the factor its score is multiplied by (the inverse norm of the decoded token
    /// when the index renormalises), or `None` for none.
    pub scale: Option<&'a [half::f16]>,
}

/// MaxSim of one document through the tables: `Σ_q max_t s(q, t)` with
///
/// ```text
/// s(q, t) = (scores[rows[t]][q] + (Σ_p T[p][packed[t][p]][q]) · step[q]) · scale[t]
/// ```
///
/// (the table sum in i16, then in f32: a multiplication, an addition and, with `scale`, a
/// multiplication), where `scores` is row-major with [`QueryTables::lanes`] floats per row (a
/// centroid's score against each query token, padded). The sum runs over the real query
/// tokens in order. A document without tokens scores `-∞` per query token, as an empty MaxSim
/// does.
///
/// `kernel` chooses the code path; one this CPU cannot run falls back to the portable one (same
/// bits either way).
///
/// # Panics
/// If the shapes disagree: `packed` is not `rows.len() × positions` bytes, `scale` not one per
/// token, `scores` not whole rows, or a row index is outside `scores`.
pub fn maxsim(kernel: Kernel, tables: &QueryTables, scores: &[f32], tokens: Tokens<'_>) -> f32 {
    let (lanes, positions) = (tables.lanes, tables.positions);
    let n = tokens.rows.len();
    assert_eq!(tokens.packed.len(), n * positions, "packed rows");
    assert!(tokens.scale.is_none_or(|s| s.len() == n), "one scale per token");
    assert!(lanes > 0 && scores.len().is_multiple_of(lanes), "score rows");
    let n_rows = scores.len() / lanes;
    assert!(tokens.rows.iter().all(|&r| (r as usize) < n_rows), "score row out of range");
    let mut best = [f32::NEG_INFINITY; GROUP_LANES];
    let mut total = 0f32;
    // Groups of at most GROUP_LANES lanes: the accumulators of a token stay in registers.
    for first in (0..lanes).step_by(GROUP_LANES) {
        let width = (lanes - first).min(GROUP_LANES);
        let best = &mut best[..width];
        best.fill(f32::NEG_INFINITY);
        let group = Group { tables, scores, first, width };
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if Isa::hardware().avx512bw => {
                // SAFETY: AVX-512F and BW were detected at run time; the shapes were asserted.
                unsafe { x86::group_avx512(&group, &tokens, best) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 if Isa::hardware().avx2 => {
                // SAFETY: AVX2 was detected at run time; the shapes were asserted above.
                unsafe { x86::group_avx2(&group, &tokens, best) }
            }
            _ => group_portable(&group, &tokens, best),
        }
        let real = tables.nq.saturating_sub(first).min(width);
        total += best[..real].iter().sum::<f32>();
    }
    total
}

/// A group of at most [`GROUP_LANES`] lanes (a multiple of [`LANE_GROUP`]) of the tables and
/// scores.
struct Group<'a> {
    tables: &'a QueryTables,
    scores: &'a [f32],
    first: usize,
    width: usize,
}

/// The portable body: per token, its lanes summed in the documented order, then maxed.
fn group_portable(g: &Group<'_>, tokens: &Tokens<'_>, best: &mut [f32]) {
    let (lanes, positions, width) = (g.tables.lanes, g.tables.positions, g.width);
    let values = g.tables.values();
    let step = &g.tables.step[g.first..g.first + width];
    let mut acc = [0i16; GROUP_LANES];
    let acc = &mut acc[..width];
    for (t, (&row, packed)) in tokens.rows.iter().zip(tokens.packed.chunks_exact(positions)).enumerate() {
        acc.fill(0);
        for (p, &b) in packed.iter().enumerate() {
            let at = (p * 256 + b as usize) * lanes + g.first;
            for (a, &v) in acc.iter_mut().zip(&values[at..at + width]) {
                *a = a.wrapping_add(v);
            }
        }
        let start = row as usize * lanes + g.first;
        let scale = tokens.scale.map(|s| s[t].to_f32());
        for (((b, &a), &st), &s) in
            best.iter_mut().zip(acc.iter()).zip(step).zip(&g.scores[start..start + width])
        {
            let mut x = s + a as f32 * st;
            if let Some(f) = scale {
                x *= f;
            }
            *b = b.max(x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod x86 {
    use super::{Group, Tokens};
    use std::arch::x86_64::*;

    /// [`super::group_portable`] with AVX-512: one or two registers of 32 i16 lanes per token.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and BW, and the shapes must be as [`super::maxsim`]
    /// asserts.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn group_avx512(g: &Group<'_>, tokens: &Tokens<'_>, best: &mut [f32]) {
        // `width` is a multiple of 32 (lanes are), at most 64.
        // The row stride as a constant where it is one of the usual two (queries of up to 64
        // tokens): row addresses then come from a shift and a displacement.
        match (g.width > 32, g.tables.lanes) {
            (true, 64) => body512::<2, 4, 64>(g, tokens, best),
            (true, _) => body512::<2, 4, 0>(g, tokens, best),
            (false, 32) => body512::<1, 2, 32>(g, tokens, best),
            (false, _) => body512::<1, 2, 0>(g, tokens, best),
        }
    }

    /// `V` registers of i16 per token, `F = 2V` of f32; `S` the row stride in lanes when it is
    /// known at compile time (else 0: the tables' own).
    #[target_feature(enable = "avx512f,avx512bw")]
    fn body512<const V: usize, const F: usize, const S: usize>(
        g: &Group<'_>,
        tokens: &Tokens<'_>,
        best: &mut [f32],
    ) {
        let (lanes, positions) = (if S > 0 { S } else { g.tables.lanes }, g.tables.positions);
        debug_assert_eq!(lanes, g.tables.lanes);
        // Values per byte position (256 rows).
        let plane = 256 * lanes;
        let values = g.tables.values().as_ptr().wrapping_add(g.first);
        let scores = g.scores.as_ptr().wrapping_add(g.first);
        let mut step = [_mm512_setzero_ps(); F];
        for (f, s) in step.iter_mut().enumerate() {
            // SAFETY: lanes `first .. first + width` of the steps exist (`width = 16 F`).
            *s = unsafe { _mm512_loadu_ps(g.tables.step.as_ptr().add(g.first + f * 16)) };
        }
        let mut max = [_mm512_set1_ps(f32::NEG_INFINITY); F];
        for (t, (&row, packed)) in tokens.rows.iter().zip(tokens.packed.chunks_exact(positions)).enumerate() {
            // Two chains of additions (even and odd byte positions), joined at the end: the
            // same sum (wrapping i16 addition is associative), half the dependency chain.
            let mut acc = [_mm512_setzero_si512(); V];
            let mut odd = [_mm512_setzero_si512(); V];
            // Row `(p, b)` starts `p * plane + b * lanes` values in; `base` is position `p`'s
            // first row. Eight code bytes are read as one word and split by shifts.
            let mut base = values;
            let mut words = packed.chunks_exact(8);
            for word in words.by_ref() {
                let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
                for j in 0..8 {
                    let r = base.wrapping_add(j * plane + (w >> (8 * j)) as u8 as usize * lanes);
                    let chain = if j % 2 == 0 { &mut acc } else { &mut odd };
                    for (v, a) in chain.iter_mut().enumerate() {
                        // SAFETY: position `p < positions` and byte `b < 256` name a row of the
                        // tables, and the group's lanes are inside it.
                        *a = _mm512_add_epi16(*a, unsafe { _mm512_loadu_si512(r.add(v * 32).cast()) });
                    }
                }
                base = base.wrapping_add(8 * plane);
            }
            for (j, &b) in words.remainder().iter().enumerate() {
                let r = base.wrapping_add(j * plane + b as usize * lanes);
                for (v, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *a = _mm512_add_epi16(*a, unsafe { _mm512_loadu_si512(r.add(v * 32).cast()) });
                }
            }
            for (a, o) in acc.iter_mut().zip(odd) {
                *a = _mm512_add_epi16(*a, o);
            }
            let s = scores.wrapping_add(row as usize * lanes);
            // The factor's f16 bits widened in every lane (exact, as `f16::to_f32`).
            let scale = tokens.scale.map(|f| _mm512_cvtph_ps(_mm256_set1_epi16(f[t].to_bits() as i16)));
            for (f, m) in max.iter_mut().enumerate() {
                let a = acc[f / 2];
                let half =
                    if f % 2 == 0 { _mm512_castsi512_si256(a) } else { _mm512_extracti64x4_epi64(a, 1) };
                let sum = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(half));
                // SAFETY: row `row` of `scores` is in bounds (asserted) and the group's lanes
                // are inside it.
                let c = unsafe { _mm512_loadu_ps(s.add(f * 16)) };
                let mut x = _mm512_add_ps(c, _mm512_mul_ps(sum, step[f]));
                if let Some(k) = scale {
                    x = _mm512_mul_ps(x, k);
                }
                *m = _mm512_max_ps(*m, x);
            }
        }
        for (f, m) in max.into_iter().enumerate() {
            let out = &mut best[f * 16..f * 16 + 16];
            // SAFETY: `out` holds 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), m) };
        }
    }

    /// [`super::group_portable`] with AVX2: two or four registers of 16 i16 lanes per token.
    ///
    /// # Safety
    /// The CPU must support AVX2, and the shapes must be as [`super::maxsim`] asserts.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn group_avx2(g: &Group<'_>, tokens: &Tokens<'_>, best: &mut [f32]) {
        if g.width > 32 {
            body256::<4, 8>(g, tokens, best)
        } else {
            body256::<2, 4>(g, tokens, best)
        }
    }

    /// `V` registers of i16 per token, `F = 2V` of f32.
    #[target_feature(enable = "avx2")]
    fn body256<const V: usize, const F: usize>(g: &Group<'_>, tokens: &Tokens<'_>, best: &mut [f32]) {
        let (lanes, positions) = (g.tables.lanes, g.tables.positions);
        let values = g.tables.values().as_ptr().wrapping_add(g.first);
        let scores = g.scores.as_ptr().wrapping_add(g.first);
        let mut step = [_mm256_setzero_ps(); F];
        for (f, s) in step.iter_mut().enumerate() {
            // SAFETY: as in `body512`, eight lanes at a time.
            *s = unsafe { _mm256_loadu_ps(g.tables.step.as_ptr().add(g.first + f * 8)) };
        }
        let mut max = [_mm256_set1_ps(f32::NEG_INFINITY); F];
        for (t, (&row, packed)) in tokens.rows.iter().zip(tokens.packed.chunks_exact(positions)).enumerate() {
            let mut acc = [_mm256_setzero_si256(); V];
            for (p, &b) in packed.iter().enumerate() {
                let r = values.wrapping_add((p * 256 + b as usize) * lanes);
                for (v, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as in `body512`, sixteen lanes at a time.
                    *a = _mm256_add_epi16(*a, unsafe { _mm256_loadu_si256(r.add(v * 16).cast()) });
                }
            }
            let s = scores.wrapping_add(row as usize * lanes);
            let scale = tokens.scale.map(|f| _mm256_set1_ps(f[t].to_f32()));
            for (f, m) in max.iter_mut().enumerate() {
                let a = acc[f / 2];
                let half =
                    if f % 2 == 0 { _mm256_castsi256_si128(a) } else { _mm256_extracti128_si256(a, 1) };
                let sum = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(half));
                // SAFETY: as in `body512`, eight lanes at a time.
                let c = unsafe { _mm256_loadu_ps(s.add(f * 8)) };
                let mut x = _mm256_add_ps(c, _mm256_mul_ps(sum, step[f]));
                if let Some(k) = scale {
                    x = _mm256_mul_ps(x, k);
                }
                *m = _mm256_max_ps(*m, x);
            }
        }
        for (f, m) in max.into_iter().enumerate() {
            let out = &mut best[f * 8..f * 8 + 8];
            // SAFETY: `out` holds 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), m) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_rows, dot, Norm};
    use half::f16;
    use proptest::prelude::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// A random codec table, centroids, query and tokens; returns the scores every path gives
    /// and the MaxSim of the decoded tokens.
    fn case(seed: u64, dim: usize, nbits: u32, per_dim: bool, nq: usize, n_tok: usize, renorm: bool) {
        let mut rng = Rng(seed);
        let g = 8 / nbits as usize;
        let positions = dim * nbits as usize / 8;
        let lut: Vec<f32> =
            (0..if per_dim { positions } else { 1 } * 256 * g).map(|_| rng.unit() * 0.3).collect();
        let t = Table { lut: &lut, dim, nbits, per_dim };
        let n_cent = 5;
        let centroids: Vec<f32> = (0..n_cent * dim).map(|_| rng.unit()).collect();
        let query: Vec<f32> = (0..nq * dim).map(|_| rng.unit()).collect();
        let codes: Vec<u32> = (0..n_tok).map(|_| (rng.next() % n_cent as u64) as u32).collect();
        let packed: Vec<u8> = (0..n_tok * positions).map(|_| rng.next() as u8).collect();
        let mut decoded = vec![0f32; n_tok * dim];
        let scale: Vec<f16> = codes
            .iter()
            .zip(packed.chunks_exact(positions))
            .map(|(&c, p)| {
                let mut x = vec![0f32; dim];
                decode_rows(&t, p, &[c], &centroids, Norm::Keep, &mut x);
                f16::from_f32(1.0 / dot(&x, &x).sqrt())
            })
            .collect();
        let norm = if renorm { Norm::Scale(&scale) } else { Norm::Keep };
        decode_rows(&t, &packed, &codes, &centroids, norm, &mut decoded);
        // The reference: MaxSim of the decoded tokens in f32.
        let want: f32 = query
            .chunks_exact(dim)
            .map(|q| decoded.chunks_exact(dim).map(|x| dot(q, x)).fold(f32::NEG_INFINITY, f32::max))
            .sum();
        let mut tables = QueryTables::new();
        tables.fill(&t, &query, nq);
        let lanes = tables.lanes();
        let mut scores = vec![0f32; n_cent * lanes];
        for (c, row) in centroids.chunks_exact(dim).zip(scores.chunks_exact_mut(lanes)) {
            for (s, q) in row.iter_mut().zip(query.chunks_exact(dim)) {
                *s = dot(q, c);
            }
        }
        let tokens = Tokens { packed: &packed, rows: &codes, scale: renorm.then_some(&scale[..]) };
        let portable = maxsim(Kernel::Scalar, &tables, &scores, tokens);
        for k in Kernel::available() {
            let got = maxsim(k, &tables, &scores, tokens);
            assert_eq!(got.to_bits(), portable.to_bits(), "{k:?}: {got} vs {portable}");
        }
        // The tables' rounding (at most half a step per byte position, per query token, times
        // the token's factor), plus f32 summation error relative to the terms' magnitudes.
        let magnitude: f32 = query
            .chunks_exact(dim)
            .map(|q| {
                decoded
                    .chunks_exact(dim)
                    .map(|x| q.iter().zip(x).map(|(a, b)| (a * b).abs()).sum::<f32>())
                    .fold(0f32, f32::max)
            })
            .sum();
        let largest_factor = if renorm { scale.iter().map(|f| f.to_f32()).fold(0f32, f32::max) } else { 1.0 };
        let rounding: f32 = tables.step()[..nq].iter().sum::<f32>() * positions as f32 / 2.0 * largest_factor;
        let tol = rounding * 1.01 + 4.0 * f32::EPSILON * (2 * dim + 4) as f32 * magnitude;
        assert!((portable - want).abs() <= tol, "tables {portable} vs decoded {want} (tolerance {tol})");
    }

    #[test]
    fn an_empty_document_scores_minus_infinity_per_query_token() {
        let lut = vec![0.1f32; 16 * 256 * 4];
        let t = Table { lut: &lut, dim: 64, nbits: 2, per_dim: true };
        let mut tables = QueryTables::new();
        tables.fill(&t, &[0.5; 64 * 3], 3);
        let scores = vec![0f32; tables.lanes()];
        let got = maxsim(Kernel::detect(), &tables, &scores, Tokens { packed: &[], rows: &[], scale: None });
        assert_eq!(got, f32::NEG_INFINITY);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn table_scores_equal_the_decoded_dot_products(
            seed in any::<u64>(),
            dim in prop::sample::select(vec![8usize, 16, 24, 64, 128]),
            nbits in prop::sample::select(vec![1u32, 2, 4]),
            per_dim in any::<bool>(),
            nq in prop::sample::select(vec![1usize, 3, 16, 17, 32, 33, 70]),
            n_tok in 1usize..40,
            renorm in any::<bool>(),
        ) {
            case(seed, dim, nbits, per_dim, nq, n_tok, renorm);
        }
    }
}
