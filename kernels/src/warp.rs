//! Scoring centroid-grouped compressed tokens against one query token at a time: the kernel of
//! the WARP search mode.
//!
//! WARP scores, for each query token `q`, every token of the centroids `q` probes. Those
//! tokens share `q`, so one small table per query token serves them all: `T_q[p][b]`, the dot
//! product of `q` with the residual dimensions that byte value `b` decodes to at byte position
//! `p` (see [`crate::lut`] for the same identity over all query tokens at once). A token's score
//! is then its centroid's score plus `Σ_p T_q[p][b_p]`.
//!
//! Here `T_q` is stored as **i8** multiples of a per-query-token step ([`TokenTables`]): 256
//! bytes per position, four AVX-512 registers, so a position's lookups for 64 tokens are two
//! byte permutes (`vpermi2b`, AVX-512 VBMI) and a blend, with the tokens' code bytes laid out
//! position-major in blocks of [`BLOCK`] tokens. Sums are accumulated in i16 and never wrap:
//! entries are bounded by `min(127, 32767 / positions)`. A rounded entry is off by at most half a
//! step, a token's sum by at most `positions / 2` steps (about `√positions / 2` in practice):
//! for 32 positions and a step of 1/127 of the largest entry, around 1e-3 of one residual term.
//! These scores choose candidates; exact ones come from [`crate::lut`] or the decoded vectors.
//!
//! [`block_sums`] has an AVX-512 VBMI body and a portable one; they return the same integers.

use crate::decode::Table;
use crate::detect::Isa;
use crate::maxsim::Kernel;

/// Tokens per block of code bytes: one AVX-512 register of bytes per byte position.
pub const BLOCK: usize = 64;

/// The codec's decoding table transposed for [`TokenTables::fill`]: for each table (one pooled,
/// or one per byte position) and each of the `g = 8 / nbits` dimensions a byte holds, the 256
/// values that dimension decodes to, so that a table entry's terms vectorise over byte values.
#[derive(Debug, Clone, Default)]
pub struct Codebook {
    dim: usize,
    g: usize,
    positions: usize,
    per_dim: bool,
    /// `tables × g × 256` floats.
    values: Vec<f32>,
}

impl Codebook {
    /// Transposes the codec table `t`.
    ///
    /// # Panics
    /// If the codec table is too short for its layout.
    pub fn new(t: &Table<'_>) -> Self {
        let g = 8 / t.nbits as usize;
        let positions = t.packed_len();
        let tables = if t.per_dim { positions } else { 1 };
        assert!(t.lut.len() >= tables * 256 * g, "decoding table");
        let mut values = vec![0f32; tables * g * 256];
        for (i, table) in t.lut.chunks_exact(256 * g).take(tables).enumerate() {
            for (b, row) in table.chunks_exact(g).enumerate() {
                for (j, &w) in row.iter().enumerate() {
                    values[(i * g + j) * 256 + b] = w;
                }
            }
        }
        Codebook { dim: t.dim, g, positions, per_dim: t.per_dim, values }
    }

    /// Byte positions per token (the codec's packed length).
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Dimensions per token.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The i8 lookup tables of one query, one per query token: `positions × 256` entries, entry
/// `(p, b)` being `T_q[p][b]` in multiples of the token's [`TokenTables::step`].
#[derive(Debug, Clone, Default)]
pub struct TokenTables {
    nq: usize,
    positions: usize,
    /// `nq × positions × 256` entries.
    values: Vec<i8>,
    step: Vec<f32>,
    /// One query token's table in f32 before rounding (kept to reuse the allocation).
    exact: Vec<f32>,
}

impl TokenTables {
    /// Empty tables; [`TokenTables::fill`] sizes them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills the tables of `query` (row-major `nq × dim`) for the codebook `cb`, reusing the
    /// allocation.
    ///
    /// # Panics
    /// If `query` is not `nq × dim` floats.
    pub fn fill(&mut self, cb: &Codebook, query: &[f32], nq: usize) {
        // The same arithmetic compiled for wider vectors where the CPU has them (no fused
        // multiply-adds, so the same bits on every path).
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Isa::get();
            if isa.avx512 {
                // SAFETY: AVX-512F was detected at run time.
                return unsafe { self.fill_avx512(cb, query, nq) };
            }
            if isa.avx2 {
                // SAFETY: AVX2 was detected at run time.
                return unsafe { self.fill_avx2(cb, query, nq) };
            }
        }
        self.fill_body(cb, query, nq)
    }

    /// [`TokenTables::fill`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_avx512(&mut self, cb: &Codebook, query: &[f32], nq: usize) {
        self.fill_body(cb, query, nq)
    }

    /// [`TokenTables::fill`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&mut self, cb: &Codebook, query: &[f32], nq: usize) {
        self.fill_body(cb, query, nq)
    }

    #[inline(always)]
    fn fill_body(&mut self, cb: &Codebook, query: &[f32], nq: usize) {
        let (dim, g, positions) = (cb.dim, cb.g, cb.positions);
        assert_eq!(query.len(), nq * dim, "query shape");
        let plane = positions * 256;
        let limit = entry_limit(positions);
        self.values.resize(nq * plane, 0);
        self.step.clear();
        let mut exact = std::mem::take(&mut self.exact);
        exact.resize(plane, 0.0);
        for (token, out) in query.chunks_exact(dim).zip(self.values.chunks_exact_mut(plane)) {
            let largest = match g {
                8 => token_table::<8>(cb, token, &mut exact),
                4 => token_table::<4>(cb, token, &mut exact),
                _ => token_table::<2>(cb, token, &mut exact),
            };
            let step = if largest > 0.0 && largest.is_finite() { largest / limit } else { 0.0 };
            let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
            self.step.push(step);
            // |v| · inv ≤ limit ≤ 127. Adding 1.5 · 2^23 rounds to the nearest integer (ties to
            // even) and leaves it in the low bits of the sum's representation.
            const MAGIC: f32 = 12_582_912.0;
            let base = MAGIC.to_bits() as i32;
            for (o, &v) in out.iter_mut().zip(exact.iter()) {
                *o = ((v * inv + MAGIC).to_bits() as i32).wrapping_sub(base) as i8;
            }
        }
        self.exact = exact;
        self.nq = nq;
        self.positions = positions;
    }

    /// Query tokens.
    pub fn nq(&self) -> usize {
        self.nq
    }

    /// Byte positions per token.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Query token `q`'s table, `positions × 256` entries.
    ///
    /// # Panics
    /// If `q` is not a query token.
    pub fn table(&self, q: usize) -> &[i8] {
        let plane = self.positions * 256;
        &self.values[q * plane..(q + 1) * plane]
    }

    /// The value of one step of query token `q`'s entries.
    ///
    /// # Panics
    /// If `q` is not a query token.
    pub fn step(&self, q: usize) -> f32 {
        self.step[q]
    }
}

/// One query token's table in f32 into `out` (`positions × 256`), entry `(p, b)` being
/// `Σ_j token[p·G + j] · w(p, b)[j]` (a multiplication and an addition per term, from zero, in `j`
/// order), accumulated in registers 16 entries at a time. Returns the largest magnitude.
#[inline(always)]
fn token_table<const G: usize>(cb: &Codebook, token: &[f32], out: &mut [f32]) -> f32 {
    let mut largest = [0f32; 16];
    for (p, row) in out.chunks_exact_mut(256).enumerate() {
        let table = if cb.per_dim { p } else { 0 };
        let cols = &cb.values[table * G * 256..(table + 1) * G * 256];
        let w: &[f32; G] = token[p * G..(p + 1) * G].try_into().expect("G dimensions");
        for (c, chunk) in row.chunks_exact_mut(16).enumerate() {
            let mut acc = [0f32; 16];
            for (j, &wj) in w.iter().enumerate() {
                let col: &[f32; 16] = cols[j * 256 + c * 16..][..16].try_into().expect("16 values");
                for (a, &v) in acc.iter_mut().zip(col) {
                    *a += wj * v;
                }
            }
            for (m, &a) in largest.iter_mut().zip(&acc) {
                // (A comparison, not `f32::max`: it vectorises; the entries are finite.)
                *m = if a.abs() > *m { a.abs() } else { *m };
            }
            chunk.copy_from_slice(&acc);
        }
    }
    largest.iter().fold(0f32, |m, &v| if v > m { v } else { m })
}

/// The largest magnitude of a table entry for tokens of `positions` bytes: 127 (an i8), or less
/// where `positions` entries of 127 could pass an i16.
fn entry_limit(positions: usize) -> f32 {
    (i16::MAX as usize / positions.max(1)).min(127) as f32
}

/// Table sums of blocks of tokens: for each block of `codes` (`positions × BLOCK` bytes,
/// position-major: byte `p` of the block's token `i` at `p · BLOCK + i`) and each of its
/// tokens, `Σ_p table[p · 256 + byte]` into `out` (`BLOCK` sums per block).
///
/// `kernel` chooses the code path: [`Kernel::Avx512`] uses the byte permutes of AVX-512 VBMI
/// where the CPU has them; every other case runs the portable loop (same integers either way).
///
/// # Panics
/// If `table` is not `positions × 256` entries, `codes` not whole blocks, or `out` not `BLOCK`
/// sums per block.
pub fn block_sums(kernel: Kernel, table: &[i8], positions: usize, codes: &[u8], out: &mut [i16]) {
    assert_eq!(table.len(), positions * 256, "table shape");
    let block = positions * BLOCK;
    assert!(block > 0 && codes.len().is_multiple_of(block), "whole blocks of codes");
    assert_eq!(out.len(), codes.len() / block * BLOCK, "one sum per token");
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512 && Isa::hardware().avx512vbmi {
        // SAFETY: AVX-512F, BW and VBMI were detected at run time; the shapes were asserted.
        return unsafe { x86::sums_vbmi(table, positions, codes, out) };
    }
    let _ = kernel;
    sums_portable(table, positions, codes, out)
}

/// The portable body of [`block_sums`].
fn sums_portable(table: &[i8], positions: usize, codes: &[u8], out: &mut [i16]) {
    for (block, sums) in codes.chunks_exact(positions * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        sums.fill(0);
        for (p, bytes) in block.chunks_exact(BLOCK).enumerate() {
            let row = &table[p * 256..(p + 1) * 256];
            for (s, &b) in sums.iter_mut().zip(bytes) {
                // Cannot wrap: |entry| ≤ 32767 / positions ([`entry_limit`]).
                *s = s.wrapping_add(row[b as usize] as i16);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod x86 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// [`super::sums_portable`] with AVX-512 VBMI: per position, the 64 tokens' bytes index the
    /// 256-entry table held in four registers (two `vpermi2b` on the low seven bits, a blend on
    /// the top one), and the bytes are widened to i16 and added.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, BW and VBMI; the shapes must be as [`super::block_sums`]
    /// asserts.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn sums_vbmi(table: &[i8], positions: usize, codes: &[u8], out: &mut [i16]) {
        let t = table.as_ptr();
        for (block, sums) in codes.chunks_exact(positions * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
            let mut lo = _mm512_setzero_si512();
            let mut hi = _mm512_setzero_si512();
            let c = block.as_ptr();
            for p in 0..positions {
                // SAFETY: the block holds `positions × 64` bytes and the table `positions × 256`
                // entries (asserted by the caller); unaligned loads.
                let (idx, t0, t1, t2, t3) = unsafe {
                    let row = t.add(p * 256);
                    (
                        _mm512_loadu_si512(c.add(p * BLOCK).cast()),
                        _mm512_loadu_si512(row.cast()),
                        _mm512_loadu_si512(row.add(64).cast()),
                        _mm512_loadu_si512(row.add(128).cast()),
                        _mm512_loadu_si512(row.add(192).cast()),
                    )
                };
                let low = _mm512_permutex2var_epi8(t0, idx, t1);
                let high = _mm512_permutex2var_epi8(t2, idx, t3);
                let v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), low, high);
                lo = _mm512_add_epi16(lo, _mm512_cvtepi8_epi16(_mm512_castsi512_si256(v)));
                hi = _mm512_add_epi16(hi, _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64::<1>(v)));
            }
            // SAFETY: `sums` holds 64 i16 (asserted by the caller); unaligned stores.
            unsafe {
                _mm512_storeu_si512(sums.as_mut_ptr().cast(), lo);
                _mm512_storeu_si512(sums.as_mut_ptr().add(32).cast(), hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_one;
    use proptest::prelude::*;

    proptest! {
        /// Every kernel returns the portable sums, and a token's scaled table sum is its
        /// residual's dot product with the query token within the stated bound.
        #[test]
        fn table_sums_match_the_decoded_dot_products(
            seed in 0u64..1_000_000,
            dim_blocks in 1usize..17,
            nbits_i in 0usize..3,
            per_dim in any::<bool>(),
            nq in 1usize..4,
            blocks in 1usize..3,
        ) {
            let nbits = [1u32, 2, 4][nbits_i];
            let dim = dim_blocks * 8;
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut float = || (next() % 2001) as f32 / 1000.0 - 1.0;
            let g = 8 / nbits as usize;
            let positions = dim * nbits as usize / 8;
            let lut: Vec<f32> =
                (0..if per_dim { positions * 256 * g } else { 256 * g }).map(|_| float() * 0.3).collect();
            let t = Table { lut: &lut, dim, nbits, per_dim };
            let query: Vec<f32> = (0..nq * dim).map(|_| float()).collect();
            let cb = Codebook::new(&t);
            let mut tables = TokenTables::new();
            tables.fill(&cb, &query, nq);
            let codes: Vec<u8> = (0..blocks * positions * BLOCK).map(|_| next() as u8).collect();
            let zero = vec![0f32; dim];
            let mut decoded = vec![0f32; dim];
            for q in 0..nq {
                let table = tables.table(q);
                let mut want = vec![0i16; blocks * BLOCK];
                sums_portable(table, positions, &codes, &mut want);
                for kernel in Kernel::ALL {
                    let mut got = vec![1i16; blocks * BLOCK];
                    block_sums(kernel, table, positions, &codes, &mut got);
                    prop_assert_eq!(&got, &want);
                }
                let token = &query[q * dim..(q + 1) * dim];
                let step = tables.step(q);
                let scale: f32 = token.iter().map(|v| v.abs()).sum::<f32>() * 0.3 + 1.0;
                for (i, &sum) in want.iter().enumerate() {
                    let (b, lane) = (i / BLOCK, i % BLOCK);
                    let packed: Vec<u8> =
                        (0..positions).map(|p| codes[(b * positions + p) * BLOCK + lane]).collect();
                    decode_one(&t, &packed, &zero, &mut decoded);
                    let exact: f32 = token.iter().zip(&decoded).map(|(a, b)| a * b).sum();
                    let bound = positions as f32 * step / 2.0 + 1e-5 * scale;
                    prop_assert!(
                        (sum as f32 * step - exact).abs() <= bound,
                        "{} vs {exact} (bound {bound})", sum as f32 * step
                    );
                }
            }
        }
    }

    #[test]
    fn entries_stay_within_an_i16_sum() {
        assert_eq!(entry_limit(32), 127.0);
        assert_eq!(entry_limit(512), 63.0);
        assert!(entry_limit(512) * 512.0 <= i16::MAX as f32);
    }
}
