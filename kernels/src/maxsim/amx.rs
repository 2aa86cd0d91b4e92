//! Exact MaxSim of f16 documents on the AMX tiles, which multiply bf16 only.
//!
//! A bf16 has 8 significant bits, an f16 11 and an f32 24, so rounding either side to bf16 would
//! not be exact. Both sides are instead split into bf16 parts that sum to them exactly, and every
//! product of parts is computed:
//!
//! - a document value `x` (an f16, exact in f32) into `xh`, its f32 bits truncated to their top
//!   16 (a bf16), and `xl = x − xh`, exact in f32 and itself a bf16 (at most 3 significant bits);
//! - a query value `q` (an f32) into `qh`, `qm` and `ql` the same way, each remainder truncated
//!   again: `q = qh + qm + ql` exactly (8 + 8 + 8 significant bits).
//!
//! Truncation keeps every part's sign, so the parts' absolute values also sum to `|x|` and `|q|`.
//! One `tdpbf16ps` pair multiplies `(a.lo, a.hi)` by `(b.lo, b.hi)` into `a.lo·b.lo + a.hi·b.hi`,
//! each product exact in f32. A document token is stored as one row of pairs `(xh_k, xl_k)`, and
//! the query as three right-hand operands of pairs `(qh_k, qm_k)`, `(qm_k, qh_k)` and
//! `(ql_k, ql_k)`, all three accumulated into one tile:
//!
//! `xh·qh + xl·qm + xh·qm + xl·qh + xh·ql + xl·ql = (xh + xl)(qh + qm + ql) = x·q`
//!
//! per dimension, so a dot product is `6·dim` exact products summed in f32: within
//! `γ(6·dim) · Σ_k |x_k·q_k|` of the exact value (the f32 kernels: `γ(dim)`), whatever order the
//! tiles add in. Each output element depends on its document token's row only, so a document
//! scores the same bits whichever documents share its tiles.

use half::f16;

use crate::bf16::amx::Tiles;

/// Rows (and u32 columns) of a tile.
const TILE: usize = 16;
/// Query tokens per right-hand panel: two column tiles.
pub(super) const COLS: usize = 2 * TILE;
/// Document rows per block: two row tiles.
pub(super) const ROWS: usize = 2 * TILE;
/// The three right-hand operands.
const PARTS: usize = 3;
/// Blocks of document rows loaded into the caches ahead of their split (measured: about 8%
/// faster than none on rows read at random from a map).
const AHEAD: usize = 2;

/// `x`'s f32 bits with the low 16 cleared: its top 8 significant bits, a bf16.
fn truncated(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0xffff_0000)
}

/// The bf16 bits of a value whose low 16 bits are zero.
fn bits16(x: f32) -> u32 {
    x.to_bits() >> 16
}

/// u32 per 64-byte cache line.
const LINE: usize = 16;

/// A u32 buffer whose data starts on a cache line: tile loads that straddle lines run at about
/// half speed.
#[derive(Debug, Default)]
pub(super) struct Aligned {
    raw: Vec<u32>,
    start: usize,
}

impl Aligned {
    /// `len` zeros.
    fn zeros(len: usize) -> Aligned {
        let raw = vec![0u32; len + LINE - 1];
        let start = raw.as_ptr().align_offset(LINE * 4).min(LINE - 1);
        Aligned { raw, start }
    }

    /// Resizes to `len` (zeros where it grows; contents are not kept when it reallocates).
    fn resize(&mut self, len: usize) {
        if self.raw.len() < len + LINE - 1 {
            *self = Aligned::zeros(len);
        }
    }

    fn get(&self) -> &[u32] {
        &self.raw[self.start..]
    }

    fn get_mut(&mut self) -> &mut [u32] {
        &mut self.raw[self.start..]
    }
}

impl Clone for Aligned {
    fn clone(&self) -> Aligned {
        let len = self.raw.len() + 1 - LINE;
        let mut copy = Aligned::zeros(len);
        copy.get_mut()[..len].copy_from_slice(&self.get()[..len]);
        copy
    }
}

/// A query split into bf16 parts and packed as the tiles' right-hand operands.
#[derive(Debug, Clone)]
pub(super) struct SplitQuery {
    /// Dimensions stored per operand: `dim` rounded up to a tile (zeros past `dim`).
    pairs: usize,
    /// Panels of [`COLS`] query tokens.
    panels: usize,
    /// Query tokens.
    len: usize,
    /// Whole right-hand tiles of 16 pairs × 16 query tokens (1 KiB, contiguous): panel `p`,
    /// step `s` (pairs `16s..16s + 16`), part `v`, column tile `j` at [`SplitQuery::tile`]
    /// `+ 256·j`; zeros past `dim` and the last token.
    data: Aligned,
}

impl SplitQuery {
    /// Splits a row-major `[len × dim]` query.
    pub(super) fn new(tokens: &[f32], dim: usize) -> SplitQuery {
        let len = tokens.len() / dim;
        let pairs = dim.div_ceil(TILE) * TILE;
        let panels = len.div_ceil(COLS);
        let mut split =
            SplitQuery { pairs, panels, len, data: Aligned::zeros(panels * PARTS * pairs * COLS) };
        for (t, token) in tokens.chunks_exact(dim).enumerate() {
            let (p, c) = (t / COLS, t % COLS);
            for (k, &q) in token.iter().enumerate() {
                let qh = truncated(q);
                let r = q - qh;
                let qm = truncated(r);
                let ql = r - qm;
                let (h, m, l) = (bits16(qh), bits16(qm), bits16(ql));
                for (v, pair) in [h | m << 16, m | h << 16, l | l << 16].into_iter().enumerate() {
                    let at =
                        split.tile(p, k / TILE, v) + (c / TILE) * TILE * TILE + (k % TILE) * TILE + c % TILE;
                    split.data.get_mut()[at] = pair;
                }
            }
        }
        split
    }

    /// Where panel `p`, step `s`, part `v`'s first column tile starts.
    fn tile(&self, p: usize, s: usize, v: usize) -> usize {
        ((p * (self.pairs / TILE) + s) * PARTS + v) * 2 * TILE * TILE
    }

    fn data(&self) -> &[u32] {
        self.data.get()
    }

    /// Columns of a block's output: `panels · COLS`.
    pub(super) fn width(&self) -> usize {
        self.panels * COLS
    }
}

/// Writes the pairs `(xh_k, xl_k)` of `src`'s values into `dst` (zeros past them): one document
/// token (`dst` its `pairs`), or several whose rows are stored unpadded.
pub(super) fn split_row(src: &[f16], dst: &mut [u32]) {
    let n = src.len();
    #[cfg(target_arch = "x86_64")]
    let done = if crate::detect::Isa::get().avx512 {
        // SAFETY: AVX-512F (with F16C) was detected.
        unsafe { x86::split_row(src, dst) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (d, x) in dst[done..n].iter_mut().zip(&src[done..]) {
        let x = x.to_f32();
        let xh = truncated(x);
        *d = bits16(xh) | (x - xh).to_bits() & 0xffff_0000;
    }
    dst[n..].fill(0);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use half::f16;

    /// [`super::split_row`] 16 values at a time; returns how many it wrote.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and F16C.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn split_row(src: &[f16], dst: &mut [u32]) -> usize {
        let n = src.len().min(dst.len()) / 16 * 16;
        let mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for i in (0..n).step_by(16) {
            // SAFETY: `i + 16 <= n` keeps the 16-element load and store inside both slices;
            // both are unaligned.
            unsafe {
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().add(i).cast()));
                let xh = _mm512_and_si512(_mm512_castps_si512(x), mask);
                // `x − xh` is exact and has at most 3 significant bits: its low 16 bits are zero.
                let xl = _mm512_castps_si512(_mm512_sub_ps(x, _mm512_castsi512_ps(xh)));
                let pair = _mm512_or_si512(_mm512_srli_epi32(xh, 16), xl);
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), pair);
            }
        }
        n
    }
}

/// `out = rows · queryᵀ` for one block of [`ROWS`] split document rows (`a`: `ROWS × pairs`
/// u32; rows past `rows` are computed and left for the caller to ignore): row `r`'s dot product
/// with query token `t` at `out[r·width + t]`. `between(i, n)` runs after the products of each
/// of the block's `n` steps (16 pairs of one panel) are issued, so that the core's own work runs
/// while the tiles multiply.
pub(super) fn block<T: Tiles>(
    t: &mut T,
    q: &SplitQuery,
    a: &[u32],
    rows: usize,
    out: &mut [f32],
    mut between: impl FnMut(usize, usize),
) {
    let (pairs, width) = (q.pairs, q.width());
    assert!(a.len() >= ROWS * pairs && out.len() >= ROWS * width, "amx maxsim: block shape");
    let tall = rows > TILE;
    let steps = q.panels * (pairs / TILE);
    for p in 0..q.panels {
        let wide = q.len - p * COLS > TILE;
        let live = [true, wide, tall, tall && wide];
        for c in (0..4).filter(|&c| live[c]) {
            t.zero(c);
        }
        for k0 in (0..pairs).step_by(TILE) {
            t.load_a(0, &a[k0..], pairs);
            if tall {
                t.load_a(1, &a[TILE * pairs + k0..], pairs);
            }
            for v in 0..PARTS {
                let b = &q.data()[q.tile(p, k0 / TILE, v)..];
                t.load_b(0, b, TILE);
                if wide {
                    t.load_b(1, &b[TILE * TILE..], TILE);
                }
                t.dot(0, 0);
                if wide {
                    t.dot(0, 1);
                }
                if tall {
                    t.dot(1, 0);
                    if wide {
                        t.dot(1, 1);
                    }
                }
            }
            between(p * (pairs / TILE) + k0 / TILE, steps);
        }
        for c in (0..4).filter(|&c| live[c]) {
            let at = (c / 2) * TILE * width + p * COLS + (c % 2) * TILE;
            t.store(c, &mut out[at..], width);
        }
    }
}

/// One block's buffers: its split rows, their products and which document each row is of.
#[derive(Debug, Default)]
struct Block {
    a: Aligned,
    out: Vec<f32>,
    owner: Vec<usize>,
}

/// Buffers of one batch: two blocks, one filled and folded by the core while the tiles
/// multiply the other.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    blocks: [Block; 2],
}

/// Running maxima of the document being folded, and the scores of those done.
struct Fold<'a> {
    current: Option<usize>,
    best: &'a mut [f32],
    scores: &'a mut [f32],
}

impl Fold<'_> {
    /// Folds a block's products (`width` per row) into the maxima, scoring each document as its
    /// last row passes.
    fn rows(&mut self, out: &[f32], owner: &[usize], width: usize) {
        for (r, &d) in owner.iter().enumerate() {
            if self.current != Some(d) {
                self.finish();
                self.current = Some(d);
                self.best.fill(f32::NEG_INFINITY);
            }
            for (m, &x) in self.best.iter_mut().zip(&out[r * width..]) {
                // (`f32::max`'s NaN handling would keep this loop scalar.)
                *m = if x > *m { x } else { *m };
            }
        }
    }

    /// Scores the current document: its maxima summed in query order.
    fn finish(&mut self) {
        if let Some(d) = self.current.take() {
            self.scores[d] = self.best.iter().sum();
        }
    }
}

/// Where the next document row to split is: document `doc`, its row `row`.
struct Cursor<'d> {
    docs: &'d [&'d [f16]],
    dim: usize,
    doc: usize,
    row: usize,
}

/// Splits the next rows into `block` until it holds `upto` (at most [`ROWS`]); returns how many
/// it holds. A document's rows are split in one pass when rows are stored unpadded (`dim` a
/// multiple of 16).
fn fill(block: &mut Block, at: &mut Cursor<'_>, upto: usize, pairs: usize) -> usize {
    let dim = at.dim;
    let target = upto.min(ROWS);
    while block.owner.len() < target && at.doc < at.docs.len() {
        let doc = at.docs[at.doc];
        let rows = doc.len() / dim;
        if at.row == rows {
            (at.doc, at.row) = (at.doc + 1, 0);
            continue;
        }
        let filled = block.owner.len();
        let take = (rows - at.row).min(target - filled);
        let src = &doc[at.row * dim..(at.row + take) * dim];
        let dst = &mut block.a.get_mut()[filled * pairs..(filled + take) * pairs];
        if dim == pairs {
            split_row(src, dst);
        } else {
            for (s, d) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(pairs)) {
                split_row(s, d);
            }
        }
        block.owner.extend(std::iter::repeat_n(at.doc, take));
        at.row += take;
    }
    block.owner.len()
}

/// Starts loading the rows after the cursor into the caches, `n` of them, and moves past them.
fn prefetch(at: &mut Cursor<'_>, mut n: usize) {
    while n > 0 && at.doc < at.docs.len() {
        let doc = at.docs[at.doc];
        let rows = doc.len() / at.dim;
        if at.row == rows {
            (at.doc, at.row) = (at.doc + 1, 0);
            continue;
        }
        let take = (rows - at.row).min(n);
        crate::prefetch::prefetch(&doc[at.row * at.dim..(at.row + take) * at.dim]);
        at.row += take;
        n -= take;
    }
}

/// MaxSim of each of `docs` (row-major `[n × dim]` f16) into `scores`, on tiles `t`; `best` is
/// at least the query's length. Documents are packed into blocks back to back, so short
/// documents share tiles; an empty document scores 0. Each maximum over a document's rows folds
/// in row order and the sum runs over the query tokens in order, as the other kernels do.
///
/// While the tiles multiply one block, the core splits the next one's rows (a share after each
/// step) and folds the previous one's products; the rows two blocks ahead start loading.
pub(super) fn maxsim_many<T: Tiles>(
    t: &mut T,
    q: &SplitQuery,
    dim: usize,
    docs: &[&[f16]],
    scores: &mut [f32],
    best: &mut [f32],
    buf: &mut Buffers,
) {
    assert_eq!(docs.len(), scores.len(), "amx maxsim: one score per document");
    for doc in docs {
        assert_eq!(doc.len() % dim, 0, "document length is not a multiple of dim");
    }
    let (pairs, width) = (q.pairs, q.width());
    for b in &mut buf.blocks {
        b.a.resize(ROWS * pairs);
        b.out.resize(ROWS * width, 0.0);
    }
    scores.fill(0.0);
    let mut fold = Fold { current: None, best: &mut best[..q.len], scores };
    let mut rows = Cursor { docs, dim, doc: 0, row: 0 };
    let mut ahead = Cursor { docs, dim, doc: 0, row: 0 };
    prefetch(&mut ahead, AHEAD * ROWS);
    let [b0, b1] = &mut buf.blocks;
    let (mut this, mut other) = (b0, b1);
    this.owner.clear();
    let mut n = fill(this, &mut rows, ROWS, pairs);
    // Whether `other` holds products not folded yet.
    let mut unfolded = false;
    t.start();
    while n > 0 {
        let mut next = 0;
        let (a, out) = (this.a.get(), &mut this.out);
        block(t, q, a, n, out, |step, steps| {
            if step == 0 {
                if unfolded {
                    fold.rows(&other.out, &other.owner, width);
                }
                other.owner.clear();
            }
            // The next block's rows, a share per step.
            let upto = ROWS * (step + 1) / steps;
            prefetch(&mut ahead, upto - other.owner.len());
            next = fill(other, &mut rows, upto, pairs);
        });
        // `other` now holds the next block's rows; this block's products wait to be folded.
        std::mem::swap(&mut this, &mut other);
        unfolded = true;
        n = next;
    }
    t.finish();
    if unfolded {
        fold.rows(&other.out, &other.owner, width);
    }
    fold.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::amx::{Hardware, Model};
    use crate::maxsim::scalar;

    /// splitmix64 values in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn gamma(n: usize) -> f64 {
        let u = f64::from(f32::EPSILON) / 2.0;
        n as f64 * u / (1.0 - n as f64 * u)
    }

    /// `|tiles − oracle|` may reach `γ(6·dim)` of the absolute products on the tiles' side,
    /// `γ(dim)` on the oracle's, plus both sums over the query tokens.
    fn tolerance(query: &[f32], doc: &[f32], dim: usize) -> f64 {
        let mass: f64 = query
            .chunks_exact(dim)
            .map(|q| {
                doc.chunks_exact(dim)
                    .map(|d| {
                        q.iter().zip(d).map(|(&a, &b)| f64::from(a).abs() * f64::from(b).abs()).sum::<f64>()
                    })
                    .fold(0.0, f64::max)
            })
            .sum();
        (gamma(6 * dim) + gamma(dim) + 2.0 * gamma(query.len() / dim)) * mass * 1.000_001
    }

    /// Scores documents of the given lengths in one batch on `tiles` and checks each against the
    /// oracle, and that each scores the same bits alone.
    fn check<T: Tiles>(tiles: &mut T, seed: u64, dim: usize, qlen: usize, lens: &[usize]) {
        let query = values(seed, qlen * dim);
        let docs: Vec<Vec<f16>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                values(seed ^ (i as u64 + 1) << 32, n * dim).into_iter().map(f16::from_f32).collect()
            })
            .collect();
        let views: Vec<&[f16]> = docs.iter().map(Vec::as_slice).collect();
        let split = SplitQuery::new(&query, dim);
        let (mut best, mut buf) = (vec![0.0; qlen], Buffers::default());
        let mut scores = vec![f32::NAN; docs.len()];
        maxsim_many(tiles, &split, dim, &views, &mut scores, &mut best, &mut buf);
        for (d, doc) in docs.iter().enumerate() {
            let want = scalar::maxsim_f16(&query, doc, dim);
            let wide: Vec<f32> = doc.iter().map(|x| x.to_f32()).collect();
            let tol = tolerance(&query, &wide, dim);
            let err = f64::from((scores[d] - want).abs());
            assert!(err <= tol, "dim {dim}, {qlen} query tokens, doc {d} ({} rows): got {}, oracle {want}, err {err:e} > {tol:e}", lens[d], scores[d]);
            let mut alone = [f32::NAN];
            maxsim_many(tiles, &split, dim, &[doc], &mut alone, &mut best, &mut buf);
            assert_eq!(alone[0].to_bits(), scores[d].to_bits(), "doc {d} alone");
        }
    }

    /// Shapes: one and two column tiles, several panels, blocks split across documents, empty
    /// documents, dimensions not a multiple of a tile.
    const CASES: [(usize, usize, &[usize]); 6] = [
        (128, 32, &[32, 32, 7, 0, 45, 1]),
        (128, 9, &[3, 40, 16, 17]),
        (64, 70, &[31, 33, 2]),
        (96, 17, &[0, 0, 5]),
        (24, 33, &[12, 64, 1, 1]),
        (7, 3, &[2, 30]),
    ];

    #[test]
    fn the_tiling_matches_the_oracle_on_the_model() {
        for (i, &(dim, qlen, lens)) in CASES.iter().enumerate() {
            check(&mut Model::default(), i as u64, dim, qlen, lens);
        }
    }

    #[test]
    fn the_tiles_match_the_oracle_where_present() {
        if !crate::cpu::Features::get().amx_usable {
            return;
        }
        let mut tiles = Hardware::new().expect("usable tiles");
        for (i, &(dim, qlen, lens)) in CASES.iter().enumerate() {
            check(&mut tiles, i as u64, dim, qlen, lens);
        }
        check(&mut tiles, 99, 128, 32, &[32; 300]);
    }

    #[test]
    fn the_parts_sum_to_the_values_exactly() {
        let values = [1.0f32, -0.1, 0.333_333_34, 1e-20, -7.123_456_7, 0.0, 65504.0, 6.0e-8];
        for &q in &values {
            let qh = truncated(q);
            let qm = truncated(q - qh);
            let ql = q - qh - qm;
            assert_eq!(ql.to_bits() & 0xffff, 0, "{q}: the last part is a bf16");
            assert_eq!(f64::from(qh) + f64::from(qm) + f64::from(ql), f64::from(q));
            let x = f16::from_f32(q);
            let mut pair = [0u32; 16];
            split_row(&[x], &mut pair);
            let (h, l) = (f32::from_bits(pair[0] << 16), f32::from_bits(pair[0] & 0xffff_0000));
            assert_eq!(f64::from(h) + f64::from(l), f64::from(x.to_f32()), "{q}");
            assert!(pair[1..].iter().all(|&p| p == 0));
        }
    }

    #[test]
    fn the_vector_split_equals_the_scalar_one() {
        let src: Vec<f16> = (0..203).map(|i| f16::from_f32((i as f32 * 0.7311).sin() * 3.0)).collect();
        let mut fast = vec![7u32; 208];
        split_row(&src, &mut fast);
        let want: Vec<u32> = src
            .iter()
            .map(|x| {
                let x = x.to_f32();
                bits16(truncated(x)) | (x - truncated(x)).to_bits()
            })
            .chain([0; 5])
            .collect();
        assert_eq!(fast, want);
    }
}
