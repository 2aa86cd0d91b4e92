//! Centroid-pruned search over a residual-compressed index (the PLAID pipeline), and the
//! exhaustive search over decompressed vectors it is measured against.
//!
//! For one query `Q` (`nq × dim`) over `C` centroids:
//!
//! 1. **Probe.** `S = C·Qᵀ` (one matrix product, centroid-major: in bf16 where the CPU runs that
//!    fast, see [`SearchParams::bf16_centroid_scores`], else f32); the `ncells` best centroids
//!    of every query token (one pass over `S`; from bf16 scores `ncells + 4` of them, re-scored
//!    in f32) give the candidate documents, the union of their IVF lists.
//! 2. **Approximate score, pruned.** A candidate's score is `Σ_q max_t S[q, code_t]` over its
//!    tokens `t`, where tokens whose centroid scores below `centroid_score_threshold` against
//!    every query token are ignored (a query token with no surviving token contributes 0). The
//!    `ndocs` best survive.
//! 3. **Approximate score, full.** The same sum over every token; the `ndocs / 4` best survive.
//! 4. **MaxSim.** Survivors are decompressed (centroid + quantised residual, renormalised
//!    when the indexed tokens were unit-norm) and scored by one `D·Qᵀ` matrix product per block
//!    of documents (`kernels::packed`: AVX-512 panels, or the general f32 product); or, on a
//!    segment that stores its tokens' norm factors (format v6), scored without decoding through
//!    per-query lookup tables ([`kernels::lut`]: the f32 scores of the survivors' distinct
//!    centroids plus one i16 table row per residual byte, times the token's factor), as
//!    exhaustive search and rerank score them too; or, when the index keeps f16 embeddings,
//!    scored exactly from those (see [`SearchParams::rescore`]). The best `k` are returned.
//!
//! Ties are broken by document number everywhere ([`TopK`]), so results do not depend on the
//! thread count.

use half::f16;
use half::slice::HalfFloatSliceExt;
use index_format::{Codes, IndexReader, Ivf};
use rayon::prelude::*;

use super::stages::{Laps, Stage};
use super::{Hit, SearchMode, SearchParams, StageTimes, TopK};
use crate::codec::{dot, Codec, Norm};
use crate::error::{EngineError, Result};
use kernels::bf16;
use kernels::cpu::{Bf16Dense, Kernels, Precision};
use kernels::lut::{self, QueryTables};
use kernels::maxsim::PreparedQuery;
use kernels::ops::{grow, Mat};
use kernels::packed::{matmul_packed, matmul_packed_rows, PackedMat};
use kernels::prefetch::prefetch;

mod warp;

/// Candidates per parallel work unit in stages 2 and 3.
const SCORE_CHUNK: usize = 1024;
/// Documents per matrix product (and parallel work unit) in stage 4 and the exhaustive search.
const DECODE_CHUNK: usize = 64;
/// Documents per parallel work unit of the lookup-table scoring ([`kernels::lut`]).
const LUT_CHUNK: usize = 256;
/// Centroids per parallel work unit of the lookup-table scoring's centroid scores.
const CENTROID_ROWS: usize = 1024;
/// Centroids per block of the stage-1 product (and parallel work unit): a multiple of the bf16
/// kernels' row blocks ([`bf16::ROW_GRANULE`]), so that a split changes no bit; 2,112 centroids
/// × 32 query tokens is about 17 MFLOP, far above the cost of handing a block to a thread.
const STAGE1_ROWS: usize = bf16::ROW_GRANULE * 22;

thread_local! {
    /// [`Compressed::score_block`]'s decoded tokens and scores, grown to the largest block seen
    /// on this thread.
    static SCORE_BUFFERS: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// How many documents ahead the loops over candidates start loading their offsets (their codes
/// at half the distance): see [`Compressed::prefetch_doc`].
const PREFETCH_DOCS: usize = 8;

/// [`Compressed::score_docs_lut`]'s buffers, one set per thread.
#[derive(Default)]
struct LutBuffers {
    tables: QueryTables,
    /// The distinct centroids, in order of first use.
    distinct: Vec<u32>,
    /// The codes of the document being read.
    codes: Vec<u32>,
    /// Their scores, `lanes` per row.
    scores: Vec<f32>,
    /// Per centroid, its row in `scores` (`u32::MAX`: none yet).
    slot: Vec<u32>,
    /// Per token, its row in `scores`.
    rows: Vec<u32>,
}

thread_local! {
    static LUT_BUFFERS: std::cell::Cell<LutBuffers> = std::cell::Cell::new(LutBuffers::default());
}

/// The largest [`SCORE_BUFFERS`] kept for the next block (8 MiB of f32): a block of 64
/// documents of 32 tokens at dim 128 needs 0.5 M, of 300 tokens at dim 384 7.4 M.
const MAX_KEPT_FLOATS: usize = 2 << 20;

/// Up to this many cells per query token, stage 1 (and WARP's probe selection) selects them in
/// one pass over the scores.
const SMALL_NCELLS: usize = 64;

/// From bf16 centroid scores, stage 1 picks this many cells per query token beyond `ncells`
/// and keeps the `ncells` best by f32 score. bf16 rounding moves a score by about 1e-4 on
/// average and by at most about 1e-3 (measured on CISI's 384-d and synthetic 128-d centroids);
/// a swap past four cells would take a larger error than that.
pub(super) const BF16_CELL_MARGIN: usize = 4;

/// Appends to `out`, for every column `q` of the row-major `[rows × nq]` matrix `scores`, the
/// row indices of the `n` highest values of that column (ties to the lower row), in one pass
/// over the rows ([`kernels::select::top_by_column`]).
fn top_cells_by_column(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    kernels::select::top_by_column(scores, nq, n, out)
}

/// `cells` holds `pick` cells per query token (token `q`'s at `cells[q * pick..]`, chosen by
/// rounded scores); re-scores them in f32 against `tokens` (`nq × dim`) and `centroids` (also
/// into the centroid-major `[C × nq]` `by_centroid`, so stage 2 sees exact scores where they
/// matter most) and keeps each token's `ncells` best, ties to the lower centroid as in the f32
/// selection.
fn refine_cells(
    tokens: &[f32],
    centroids: &[f32],
    dim: usize,
    by_centroid: &mut [f32],
    cells: &mut Vec<u32>,
    pick: usize,
    ncells: usize,
) {
    let nq = tokens.len() / dim;
    if cells.len() != nq * pick {
        // Fewer than `pick` per token: only NaN scores (corrupt centroids) do that; keep them.
        return;
    }
    let mut kept = Vec::with_capacity(nq * ncells);
    let mut scored: Vec<(f32, u32)> = Vec::with_capacity(pick);
    for (q, (tok, picked)) in tokens.chunks_exact(dim).zip(cells.chunks_exact(pick)).enumerate() {
        scored.clear();
        for &j in picked {
            let s = dot(tok, &centroids[j as usize * dim..(j as usize + 1) * dim]);
            by_centroid[j as usize * nq + q] = s;
            scored.push((s, j));
        }
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        kept.extend(scored[..ncells].iter().map(|&(_, j)| j));
    }
    *cells = kept;
}

/// The `pick` best centroids of every query token by `scores` (`[C × nq]`, centroid-major),
/// query-token-major (`pick` per token), ties to the lower centroid.
fn best_cells(scores: &[f32], nq: usize, c: usize, pick: usize) -> Vec<u32> {
    let mut cells: Vec<u32> = Vec::with_capacity(nq * pick);
    if pick <= SMALL_NCELLS {
        top_cells_by_column(scores, nq, pick, &mut cells);
    } else {
        let mut order: Vec<u32> = Vec::with_capacity(c);
        for q in 0..nq {
            let score = |j: u32| scores[j as usize * nq + q];
            order.clear();
            order.extend(0..c as u32);
            let by_score = |a: &u32, b: &u32| score(*b).total_cmp(&score(*a)).then(a.cmp(b));
            if pick < c {
                order.select_nth_unstable_by(pick - 1, by_score);
            }
            cells.extend_from_slice(&order[..pick]);
        }
    }
    cells
}

/// Removes from the strictly increasing `docs` every document of the strictly increasing
/// `deleted`, in one merge pass.
pub(crate) fn remove_sorted(docs: &mut Vec<u32>, deleted: &[u32]) {
    if deleted.is_empty() {
        return;
    }
    let mut j = 0;
    docs.retain(|&d| {
        while j < deleted.len() && deleted[j] < d {
            j += 1;
        }
        !(j < deleted.len() && deleted[j] == d)
    });
}

/// What a compressed index needs in memory to be searched: centroids in f32 and the codec
/// rebuilt from its stored parameters. Built once when the index is opened.
#[derive(Debug)]
pub struct CompressedState {
    centroids: Vec<f32>,
    /// The centroids rounded to bf16 for stage 1, kept only where [`Precision::Auto`] runs bf16
    /// on this CPU ([`SearchParams::bf16_centroid_scores`]).
    centroids_bf16: Option<(bf16::PackedRows, Bf16Dense)>,
    codec: Codec,
    n_centroids: usize,
    centroid_fit: Option<f32>,
    /// Renormalise decoded vectors ([`index_format::ResidualMeta::unit_norm`]).
    unit_norm: bool,
    /// The tokens grouped by centroid for [`SearchMode::Warp`], built on first use.
    warp: std::sync::OnceLock<warp::WarpLayout>,
}

impl CompressedState {
    /// Loads the centroids and codec of a residual index; `None` for another kind.
    ///
    /// # Errors
    /// If the stored codec parameters are invalid.
    pub fn load(reader: &IndexReader) -> Result<Option<Self>> {
        let (Some(r), Some(cent), Some((cutoffs, weights))) =
            (reader.residual(), reader.centroids(), reader.buckets())
        else {
            return Ok(None);
        };
        let meta = reader.meta();
        let dim = meta.dim;
        let centroids: Vec<f32> = cent.iter().map(|v| v.to_f32()).collect();
        let codec =
            Codec::from_parts(dim, meta.kind.nbits(), cutoffs.to_vec(), weights.to_vec()).map_err(|e| {
                EngineError::Format(index_format::FormatError::corrupt(
                    reader.dir().join(index_format::Component::Buckets.file_name()),
                    e.to_string(),
                ))
            })?;
        let n_centroids = r.n_centroids as usize;
        let centroid_fit = meta.build.get("centroid_fit").and_then(|v| v.as_f64()).map(|v| v as f32);
        // (The reader checked at open that the centroids hold `n_centroids × dim` values.)
        let kernels = Kernels::auto();
        let centroids_bf16 = match (kernels.runs_bf16(Precision::Auto), kernels.bf16_dense) {
            (true, Some(kind)) => Some((bf16::PackedRows::pack(&centroids, n_centroids, dim), kind)),
            _ => None,
        };
        Ok(Some(Self {
            centroids,
            centroids_bf16,
            codec,
            n_centroids,
            centroid_fit,
            unit_norm: r.unit_norm,
            warp: std::sync::OnceLock::new(),
        }))
    }

    /// The mean dot product of a held-out training token with its centroid, recorded at build.
    pub fn centroid_fit(&self) -> Option<f32> {
        self.centroid_fit
    }

    /// The codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The centroids, row-major `C × dim`, in f32.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }
}

/// A compressed index ready to search: the mapped arrays plus the in-memory state.
#[derive(Debug, Clone, Copy)]
pub struct Compressed<'a> {
    state: &'a CompressedState,
    dim: usize,
    codes: Codes<'a>,
    residuals: &'a [u8],
    doc_offsets: &'a [u64],
    n_tokens: u64,
    ivf: Ivf<'a>,
    dir: &'a std::path::Path,
    embeddings: Option<&'a [f16]>,
    /// Each token's stored inverse decoded norm (v6), which replaces the computed one.
    norms: Option<&'a [f16]>,
    /// Score compressed tokens through lookup tables ([`Compressed::lut_ready`]).
    lut: bool,
    /// The stored centroid-grouped copy of the tokens (v7), for the WARP mode.
    warp_files: Option<index_format::WarpFiles<'a>>,
}

impl Compressed<'_> {
    /// Whether the segment stores the centroid-grouped layout WARP mode reads (format v7,
    /// `warp_layout`): then [`SearchMode::Auto`] runs WARP mode for small `k`.
    pub fn stores_warp_layout(&self) -> bool {
        self.warp_files.is_some()
    }

    /// Bytes of the stored centroid-grouped layout's files (format v7; 0 without one): what
    /// [`Compressed::prepare_warp`] maps.
    pub fn stored_warp_bytes(&self) -> u64 {
        self.warp_files.map_or(0, |f| {
            let words = (f.counts.len() + f.docs.len()) as u64;
            f.codes.len() as u64 + 4 * words + 2 * f.norms.map_or(0, <[_]>::len) as u64
        })
    }
}

impl<'a> Compressed<'a> {
    /// Views `reader` (a residual index) with its loaded `state`.
    ///
    /// # Panics
    /// If `reader` is not a residual index (its arrays are checked at open).
    pub fn new(reader: &'a IndexReader, state: &'a CompressedState) -> Self {
        Compressed {
            state,
            dim: reader.meta().dim,
            codes: reader.codes().expect("residual index"),
            residuals: reader.residuals().expect("residual index"),
            doc_offsets: reader.doc_offsets(),
            n_tokens: reader.meta().n_tokens,
            ivf: reader.ivf().expect("residual index"),
            dir: reader.dir(),
            embeddings: reader.has_embeddings().then(|| reader.embeddings()),
            norms: reader.token_norms(),
            lut: reader.token_norms().is_some(),
            warp_files: reader.warp_files(),
        }
    }

    fn n_docs(&self) -> usize {
        self.doc_offsets.len().saturating_sub(1)
    }

    /// A corruption of the inverted file found while searching (`verify` reports it too).
    fn corrupt_ivf(&self, detail: String) -> EngineError {
        let path = self.dir.join(self.ivf.component().file_name());
        EngineError::Format(index_format::FormatError::corrupt(path, detail))
    }

    /// A corruption of the codes found while searching, in document `doc` (`verify` reports it
    /// too).
    fn corrupt_codes(&self, doc: u32, detail: impl std::fmt::Display) -> EngineError {
        let path = self.dir.join(self.codes.component().file_name());
        EngineError::Format(index_format::FormatError::corrupt(path, format!("document {doc}: {detail}")))
    }

    /// The codes of document `doc`'s tokens into `out`, each checked to be a centroid.
    fn doc_codes(&self, doc: u32, out: &mut Vec<u32>) -> Result<()> {
        let tokens = self.tokens(doc)?;
        self.codes.doc_tokens_into(doc as usize, tokens, out).map_err(|e| self.corrupt_codes(doc, e))?;
        self.check_codes(doc, out)
    }

    /// That every code in `codes` (of document `doc`) is a centroid.
    #[inline]
    fn check_codes(&self, doc: u32, codes: &[u32]) -> Result<()> {
        let c = self.state.n_centroids;
        match codes.iter().fold(0, |m, &cent| m.max(cent)) as usize {
            max if max >= c => {
                Err(self.corrupt_codes(doc, format!("it has code {max}, but there are {c} centroids")))
            }
            _ => Ok(()),
        }
    }

    /// Starts loading what reading document `doc`'s codes will touch, in two steps a few
    /// documents apart: first its token and code offsets, then (with `bytes`, once the offsets
    /// are in cache) its code bytes. Candidates are spread over the whole index, and each
    /// decode otherwise waits on two or three cache misses in turn.
    fn prefetch_doc(&self, doc: u32, bytes: bool) {
        let d = doc as usize;
        if bytes {
            prefetch(self.codes.doc_bytes(d));
        } else {
            prefetch(self.doc_offsets.get(d..d.saturating_add(2)).unwrap_or_default());
            prefetch(self.codes.doc_offset_bytes(d));
        }
    }

    /// [`Compressed::prefetch_doc`]'s two steps for the documents [`PREFETCH_DOCS`] and half
    /// as many places after position `i` of `docs`.
    fn prefetch_ahead(&self, docs: &[u32], i: usize) {
        if let Some(&d) = docs.get(i + PREFETCH_DOCS) {
            self.prefetch_doc(d, false);
        }
        if let Some(&d) = docs.get(i + PREFETCH_DOCS / 2) {
            self.prefetch_doc(d, true);
        }
    }

    /// The tokens of document `doc`, checked before anything is sliced or allocated by them:
    /// opening an index checks only the first and last offsets.
    fn tokens(&self, doc: u32) -> Result<std::ops::Range<usize>> {
        index_format::doc_range(self.doc_offsets, doc as usize, self.n_tokens).ok_or_else(|| {
            let path = self.dir.join(index_format::Component::DocOffsets.file_name());
            let at = |i: usize| self.doc_offsets.get(i).map_or("none".to_string(), |v| v.to_string());
            let detail = format!(
                "document {doc} owns tokens {} to {}: offsets must not decrease nor pass the {} tokens",
                at(doc as usize),
                at((doc as usize).saturating_add(1)),
                self.n_tokens
            );
            EngineError::Format(index_format::FormatError::corrupt(path, detail))
        })
    }

    /// Decompresses document `doc` into `out` (f32, row-major `[len × dim]`; cleared first),
    /// its tokens in stored order, each renormalised to unit length when the index's tokens were
    /// unit-norm ([`index_format::ResidualMeta::unit_norm`]).
    ///
    /// # Errors
    /// If the document's codes are corrupt.
    pub fn decompress_into(&self, doc: u32, out: &mut Vec<f32>) -> Result<()> {
        let dim = self.dim;
        let range = self.tokens(doc)?;
        out.clear();
        out.resize(range.len() * dim, 0.0);
        let mut codes = Vec::with_capacity(range.len());
        self.doc_codes(doc, &mut codes)?;
        self.decode_tokens(range.start, &codes, out)
    }

    /// Decodes the tokens from `first` on, whose codes are `codes`, into `out` (`codes.len()`
    /// rows of `dim`).
    fn decode_tokens(&self, first: usize, codes: &[u32], out: &mut [f32]) -> Result<()> {
        let pl = self.state.codec.packed_len();
        let tokens = first..first + codes.len();
        let packed = &self.residuals[tokens.start * pl..tokens.end * pl];
        let norm = match self.norms {
            Some(n) => Norm::Scale(&n[tokens]),
            None if self.state.unit_norm => Norm::Unit,
            None => Norm::Keep,
        };
        self.state.codec.decode_rows(packed, codes, &self.state.centroids, norm, out)
    }

    /// The exact f16 embeddings of tokens `r` (checked to be within `n_tokens`), if kept.
    fn exact(&self, r: std::ops::Range<usize>) -> Option<&'a [f16]> {
        self.embeddings.map(|e| &e[r.start * self.dim..r.end * self.dim])
    }

    /// Stage 1: `C·Qᵀ` as `[C × nq]` f32 scores (centroid-major: row `j` holds centroid `j`'s
    /// score against every query token, the layout stages 2 and 3 look up by code), with `Qᵀ`
    /// packed as given; in bf16 when `bf16` is set and the state keeps bf16 centroids.
    /// Returns the scores and whether they were rounded (computed in bf16).
    fn centroid_scores(&self, query: &PreparedQuery, qt: &PackedMat, bf16: bool) -> (Vec<f32>, bool) {
        let (c, nq, dim) = (self.state.n_centroids, qt.n(), self.dim);
        let mut scores = vec![0f32; c * nq];
        // Blocks of STAGE1_ROWS centroids, on as many threads as the pool has: the blocks are
        // the same whatever the thread count, so the scores are too, bit for bit.
        let blocks = scores.par_chunks_mut(STAGE1_ROWS * nq).enumerate();
        match self.state.centroids_bf16.as_ref().filter(|_| bf16) {
            Some((rows, kind)) => {
                let q = query.tokens();
                let mut qt16 = bf16::PackedB::default();
                qt16.repack(dim, nq, |d, t| q[t * dim + d]);
                blocks.for_each(|(i, out)| {
                    let first = i * STAGE1_ROWS;
                    bf16::matmul_row_range(*kind, rows, first..first + out.len() / nq, &qt16, out);
                });
                (scores, true)
            }
            None => {
                let centroids = &self.state.centroids;
                blocks.for_each(|(i, out)| {
                    let (first, n) = (i * STAGE1_ROWS, out.len() / nq);
                    matmul_packed(&centroids[first * dim..(first + n) * dim], n, qt, out);
                });
                (scores, false)
            }
        }
    }

    /// Searches one query; see the module documentation.
    pub fn search(&self, query: &PreparedQuery, params: &SearchParams) -> Result<Vec<Hit>> {
        self.search_timed(query, params, None)
    }

    /// [`Compressed::search`], adding the time spent in each stage to `times` when given (no
    /// clock is read otherwise).
    pub fn search_timed(
        &self,
        query: &PreparedQuery,
        params: &SearchParams,
        times: Option<&mut StageTimes>,
    ) -> Result<Vec<Hit>> {
        self.search_excluding(query, params, times, &[])
    }

    /// [`Compressed::search_timed`] never returning the documents of `deleted` (strictly
    /// increasing document numbers): they are removed from the candidates before any scoring,
    /// so the `k` results are the best live documents.
    pub fn search_excluding(
        &self,
        query: &PreparedQuery,
        params: &SearchParams,
        times: Option<&mut StageTimes>,
        deleted: &[u32],
    ) -> Result<Vec<Hit>> {
        if params.k == 0 {
            return Ok(Vec::new());
        }
        let mut laps = Laps::start(times);
        let poor_fit = self.state.centroid_fit.is_some_and(|f| f < params.min_centroid_fit);
        if params.exhaustive || poor_fit {
            return self.exhaustive_one(query, params, &mut laps, deleted);
        }
        if params.mode_for(self.warp_files.is_some()) == SearchMode::Warp {
            return self.search_warp(query, params, &mut laps, deleted);
        }
        let nq = query.len();
        let c = self.state.n_centroids;
        // Qᵀ packed once: the stage-1 product and the exact scoring of stage 4 both use it.
        let qt = PackedMat::pack(Mat::dense(query.tokens(), nq, self.dim).t());
        let (mut by_centroid, rounded) = self.centroid_scores(query, &qt, params.bf16_centroid_scores);
        // Stage 1: probe the ncells best centroids of each query token. From bf16 scores, a few
        // more are picked and re-scored in f32, so that rounding cannot swap a near tie at the
        // last cell (the product is what costs; these few dot products do not).
        let ncells = params.ncells.clamp(1, c);
        let pick = if rounded { (ncells + BF16_CELL_MARGIN).min(c) } else { ncells };
        let mut cells = best_cells(&by_centroid, nq, c, pick);
        if pick > ncells {
            refine_cells(
                query.tokens(),
                &self.state.centroids,
                self.dim,
                &mut by_centroid,
                &mut cells,
                pick,
                ncells,
            );
        }
        cells.sort_unstable();
        cells.dedup();
        let mut candidates: Vec<u32> = Vec::new();
        for &cell in &cells {
            if let Err(e) = self.ivf.append_list(cell as usize, &mut candidates) {
                return Err(self.corrupt_ivf(format!("the list of centroid {cell} does not decode: {e}")));
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        if let Some(&d) = candidates.last().filter(|&&d| d as usize >= self.n_docs()) {
            return Err(self.corrupt_ivf(format!("it lists document {d}, but there are {}", self.n_docs())));
        }
        remove_sorted(&mut candidates, deleted);
        laps.lap(Stage::Candidates);
        // A count rather than `any`: no early exit, so it vectorises (most centroids have no
        // score above the threshold, and an early-exit scan of all 8192 × 32 took a tenth of
        // the query).
        let threshold = params.centroid_score_threshold;
        let keep: Vec<bool> =
            by_centroid.chunks_exact(nq).map(|s| s.iter().filter(|&&v| v >= threshold).count() > 0).collect();
        // Stage 2: pruned approximate scores; stage 3: full approximate scores.
        // The depth for this segment's size (scaled up on large segments by default).
        let ndocs = params.ndocs_for(self.n_docs());
        let stage2 = self.approx_top(&candidates, &by_centroid, nq, Some(&keep), ndocs.max(params.k))?;
        let stage2: Vec<u32> = stage2.into_iter().map(|h| h.doc).collect();
        let stage3 = self.approx_top(&stage2, &by_centroid, nq, None, params.stage3_keep(ndocs))?;
        let mut survivors: Vec<u32> = stage3.into_iter().map(|h| h.doc).collect();
        survivors.sort_unstable();
        laps.lap(Stage::Pruning);
        self.final_scores(query, &qt, &survivors, params, &mut laps)
    }

    /// The best `keep` of `docs` by `Σ_q max_t S[q, code_t]`, over tokens whose centroid is
    /// kept (all tokens when `keep` is `None`). A code that is not a centroid is an error.
    fn approx_top(
        &self,
        docs: &[u32],
        by_centroid: &[f32],
        nq: usize,
        keep: Option<&[bool]>,
        n: usize,
    ) -> Result<Vec<Hit>> {
        let score_chunk = |chunk: &[u32]| -> Result<TopK> {
            let mut top = TopK::new(n);
            let mut best = vec![0f32; nq];
            // The centroids of a document's tokens (from format v4 on, each once).
            let mut codes: Vec<u32> = Vec::new();
            for (i, &doc) in chunk.iter().enumerate() {
                self.prefetch_ahead(chunk, i);
                let floor = if keep.is_some() { 0.0 } else { f32::NEG_INFINITY };
                best.iter_mut().for_each(|b| *b = floor);
                let tokens = self.tokens(doc)?;
                if let Err(e) = self.codes.doc_centroids_into(doc as usize, tokens, &mut codes) {
                    return Err(self.corrupt_codes(doc, e));
                }
                self.check_codes(doc, &codes)?;
                for &cent in &codes {
                    let cent = cent as usize;
                    if keep.is_some_and(|k| !k[cent]) {
                        continue;
                    }
                    let s = &by_centroid[cent * nq..(cent + 1) * nq];
                    for (b, &v) in best.iter_mut().zip(s) {
                        *b = b.max(v);
                    }
                }
                top.push(doc, best.iter().sum());
            }
            Ok(top)
        };
        let top = if docs.len() <= SCORE_CHUNK {
            score_chunk(docs)?
        } else {
            docs.par_chunks(SCORE_CHUNK).map(score_chunk).try_reduce(
                || TopK::new(n),
                |mut a, b| {
                    a.merge(b);
                    Ok(a)
                },
            )?
        };
        Ok(top.into_sorted())
    }

    /// The best `k` of `docs` (document numbers below the document count, each once) by exact
    /// MaxSim against `query`: from the exact f16 embeddings when the index keeps them, else from
    /// the decompressed residuals. What reranking a first stage's candidates runs.
    ///
    /// # Errors
    /// If a document's codes are corrupt, or a number is not a document.
    pub fn score_candidates(&self, query: &PreparedQuery, docs: &[u32], k: usize) -> Result<Vec<Hit>> {
        if let Some(&d) = docs.iter().find(|&&d| d as usize >= self.n_docs()) {
            return Err(EngineError::InvalidArgument(format!(
                "document number {d} is past the last document"
            )));
        }
        if self.embeddings.is_some() {
            return self.score_f16_tier(query, docs, k);
        }
        if self.lut {
            return self.score_docs_lut(query, docs, k);
        }
        let qt = PackedMat::pack(Mat::dense(query.tokens(), query.len(), self.dim).t());
        self.score_docs(&qt, docs, k, false)
    }

    /// The best `k` of `docs` (document numbers checked below the document count) by exact MaxSim
    /// over their f16 rows, with the MaxSim kernel straight on the rows (no f32 copy): on the AMX
    /// tiles where the process may use them (`Scorer::score_f16_many`). Requires the f16 tier.
    fn score_f16_tier(&self, query: &PreparedQuery, docs: &[u32], k: usize) -> Result<Vec<Hit>> {
        super::exhaustive::top_of(query, docs, k, DECODE_CHUNK, |d| {
            Ok(self.exact(self.tokens(d)?).unwrap_or_default())
        })
    }

    /// Whether this segment's compressed tokens are scored through lookup tables
    /// ([`kernels::lut`]) rather than decoded, in search's last stage, exhaustive search and
    /// rerank alike: when the segment stores each token's norm factor (format v6, unit-norm
    /// tokens). Other segments decode, and score exactly as they always did.
    pub fn lut_ready(&self) -> bool {
        self.lut
    }

    /// The best `k` of `docs` (document numbers checked below the document count) by MaxSim of
    /// the decompressed tokens, computed through per-query lookup tables instead of decoding
    /// ([`kernels::lut`]): each token costs one table row per residual byte plus its centroid's
    /// score row. Requires [`Compressed::lut_ready`].
    fn score_docs_lut(&self, query: &PreparedQuery, docs: &[u32], k: usize) -> Result<Vec<Hit>> {
        // The calling thread's buffers, reused across queries: the tables alone are 1.5 MiB
        // (their f32 form and the rounded one) for 32 query tokens at dim 128, nbits 2.
        let mut buffers = LUT_BUFFERS.take();
        let result = self.score_docs_lut_with(query, docs, k, &mut buffers);
        LUT_BUFFERS.set(buffers);
        result
    }

    /// [`Compressed::score_docs_lut`] with its buffers.
    fn score_docs_lut_with(
        &self,
        query: &PreparedQuery,
        docs: &[u32],
        k: usize,
        buffers: &mut LutBuffers,
    ) -> Result<Vec<Hit>> {
        let (nq, dim, c) = (query.len(), self.dim, self.state.n_centroids);
        let LutBuffers { tables, distinct, codes, scores, slot, rows } = buffers;
        // The tables are filled while the documents' codes are read (on two threads where the
        // pool has a free one; one after the other otherwise).
        let ((), starts) = rayon::join(
            || tables.fill(&self.state.codec.table(), query.tokens(), nq),
            || -> Result<Vec<usize>> {
                rows.clear();
                slot.clear();
                slot.resize(c, u32::MAX);
                distinct.clear();
                // Where each document's tokens start in `rows`.
                let mut starts = Vec::with_capacity(docs.len());
                for (i, &doc) in docs.iter().enumerate() {
                    self.prefetch_ahead(docs, i);
                    starts.push(rows.len());
                    self.doc_codes(doc, codes)?;
                    for &code in codes.iter() {
                        let s = &mut slot[code as usize];
                        if *s == u32::MAX {
                            *s = distinct.len() as u32;
                            distinct.push(code);
                        }
                        rows.push(*s);
                    }
                }
                Ok(starts)
            },
        );
        let starts = starts?;
        let lanes = tables.lanes();
        // The query padded to `lanes` tokens (zero rows), so that centroid scores come out in
        // the tables' row layout.
        let mut padded = query.tokens().to_vec();
        padded.resize(lanes * dim, 0.0);
        // The f32 scores of the documents' distinct centroids. Each is the same dot product
        // (the product kernel sums every output in dimension order, whichever rows it is
        // computed with), so a document scores the same whichever documents come with it.
        let qt = PackedMat::pack(Mat::dense(&padded, lanes, dim).t());
        let scores = grow(scores, distinct.len() * lanes);
        let centroids = &self.state.centroids[..];
        if distinct.len() <= CENTROID_ROWS {
            // One block: on the calling thread (a hand-off to the pool costs more than it).
            matmul_packed_rows(centroids, distinct, &qt, scores);
        } else {
            scores
                .par_chunks_mut(CENTROID_ROWS * lanes)
                .zip(distinct.par_chunks(CENTROID_ROWS))
                .for_each(|(out, ids)| matmul_packed_rows(centroids, ids, &qt, out));
        }
        let (tables, scores, rows) = (&*tables, &*scores, &rows[..]);
        let kernel = kernels::maxsim::Kernel::detect();
        let pl = self.state.codec.packed_len();
        let block = |(chunk, starts): (&[u32], &[usize])| -> Result<TopK> {
            let mut top = TopK::new(k);
            let mut ranges = chunk.iter().map(|&d| self.tokens(d));
            let mut next = ranges.next().transpose()?;
            for (&doc, &start) in chunk.iter().zip(starts) {
                let range = next.take().expect("one range per document");
                // The next document's residual bytes and norm factors start loading while this
                // one is scored: its table lookups wait on them.
                next = ranges.next().transpose()?;
                if let Some(r) = &next {
                    prefetch(&self.residuals[r.start * pl..r.end * pl]);
                    if let Some(norms) = self.norms {
                        prefetch(&norms[r.clone()]);
                    }
                }
                let tokens = lut::Tokens {
                    packed: &self.residuals[range.start * pl..range.end * pl],
                    rows: &rows[start..start + range.len()],
                    scale: self.norms.map(|n| &n[range.clone()]),
                };
                top.push(doc, lut::maxsim(kernel, tables, scores, tokens));
            }
            Ok(top)
        };
        let top = if docs.len() <= LUT_CHUNK {
            block((docs, &starts))?
        } else {
            docs.par_chunks(LUT_CHUNK).zip(starts.par_chunks(LUT_CHUNK)).map(block).try_reduce(
                || TopK::new(k),
                |mut a, b| {
                    a.merge(b);
                    Ok(a)
                },
            )?
        };
        Ok(top.into_sorted())
    }

    /// Document `doc` as stored: the centroid code of each of its tokens (into `codes`), its
    /// packed residual rows, and its exact f16 tokens when the index keeps them, all in stored
    /// order. What compaction copies between segments.
    ///
    /// # Errors
    /// If the document's codes are corrupt.
    pub fn encoded_doc(&self, doc: u32, codes: &mut Vec<u32>) -> Result<(&'a [u8], Option<&'a [f16]>)> {
        self.doc_codes(doc, codes)?;
        let range = self.tokens(doc)?;
        let pl = self.state.codec.packed_len();
        Ok((&self.residuals[range.start * pl..range.end * pl], self.exact(range)))
    }

    /// Stage 4 (and the exact tier) on `docs`.
    fn final_scores(
        &self,
        query: &PreparedQuery,
        qt: &PackedMat,
        docs: &[u32],
        params: &SearchParams,
        laps: &mut Laps<'_>,
    ) -> Result<Vec<Hit>> {
        let exact_all = self.embeddings.is_some() && params.rescore.is_none();
        let first_k = match params.rescore {
            Some(n) if n > 0 && self.embeddings.is_some() => n.max(params.k),
            _ => params.k,
        };
        // On the AMX tiles the MaxSim kernel scores f16 rows faster than their f32 copies' product.
        let tiles = kernels::maxsim::tiles_usable();
        let scored = if exact_all && tiles {
            self.score_f16_tier(query, docs, first_k)?
        } else if !exact_all && self.lut {
            self.score_docs_lut(query, docs, first_k)?
        } else {
            self.score_docs(qt, docs, first_k, exact_all)?
        };
        laps.lap(Stage::MaxSim);
        match params.rescore {
            Some(n) if n > 0 && self.embeddings.is_some() => {
                let docs: Vec<u32> = scored.iter().map(|h| h.doc).collect();
                let hits = if tiles {
                    self.score_f16_tier(query, &docs, params.k)
                } else {
                    self.score_docs(qt, &docs, params.k, true)
                };
                laps.lap(Stage::Tail);
                hits
            }
            _ => Ok(scored),
        }
    }

    /// Top `k` of `docs` by MaxSim, over exact f16 embeddings or decompressed residuals.
    ///
    /// Documents are scored in blocks of [`DECODE_CHUNK`]: their tokens are gathered (decoded,
    /// or converted from f16) into one f32 matrix `D`, and `D·Qᵀ` is one matrix product against
    /// the query's packed transpose (`kernels::packed`), reduced per document to `Σ_q max_t`.
    fn score_docs(&self, q: &PackedMat, docs: &[u32], k: usize, exact: bool) -> Result<Vec<Hit>> {
        // Every block computes D·Qᵀ against the query's packed Qᵀ.
        let block = |chunk: &[u32]| -> Result<TopK> {
            let mut top = TopK::new(k);
            self.score_block(q, chunk, exact, &mut top)?;
            Ok(top)
        };
        let top = if docs.len() <= DECODE_CHUNK {
            block(docs)?
        } else {
            docs.par_chunks(DECODE_CHUNK).map(block).try_reduce(
                || TopK::new(k),
                |mut a, b| {
                    a.merge(b);
                    Ok(a)
                },
            )?
        };
        Ok(top.into_sorted())
    }

    fn score_block(&self, q: &PackedMat, docs: &[u32], exact: bool, top: &mut TopK) -> Result<()> {
        // Per-thread buffers reused across blocks and queries: fresh megabyte-sized vectors cost
        // a zeroing pass and a page fault per 4 KiB on every query.
        let (mut mat, mut scores) = SCORE_BUFFERS.take();
        let result = self.score_block_into(q, docs, exact, top, &mut mat, &mut scores);
        // Blocks of long documents can need tens of megabytes: those are not kept.
        if mat.len() + scores.len() <= MAX_KEPT_FLOATS {
            SCORE_BUFFERS.set((mat, scores));
        }
        result
    }

    /// [`Self::score_block`] with its buffers: the decoded tokens and their scores. Every element
    /// read is first written here (decoded, converted or computed), so they are not zeroed.
    fn score_block_into(
        &self,
        q: &PackedMat,
        docs: &[u32],
        exact: bool,
        top: &mut TopK,
        mat: &mut Vec<f32>,
        scores: &mut Vec<f32>,
    ) -> Result<()> {
        let dim = self.dim;
        // Distinct documents with checked offsets: at most n_tokens together.
        let n_tok = docs
            .iter()
            .try_fold(0usize, |n, &d| Ok::<_, EngineError>(n.saturating_add(self.tokens(d)?.len())))?;
        if n_tok == 0 {
            return Ok(());
        }
        let mat = grow(mat, n_tok * dim);
        let mut codes: Vec<u32> = Vec::new();
        let mut row = 0;
        for &doc in docs {
            let range = self.tokens(doc)?;
            let out = &mut mat[row * dim..(row + range.len()) * dim];
            match self.exact(range.clone()).filter(|_| exact) {
                Some(tokens) => tokens.convert_to_f32_slice(out),
                None => {
                    self.doc_codes(doc, &mut codes)?;
                    self.decode_tokens(range.start, &codes, out)?;
                }
            }
            row += range.len();
        }
        // Token-major scores: row t holds token t's dot products with every query token, so a
        // document's MaxSim is an element-wise max over its rows, then a sum in query order.
        let nq = q.n();
        let scores = grow(scores, n_tok * nq);
        matmul_packed(mat, n_tok, q, scores);
        let mut maxes = vec![f32::NEG_INFINITY; nq];
        let mut start = 0;
        for &doc in docs {
            let len = self.tokens(doc)?.len();
            maxes.fill(f32::NEG_INFINITY);
            for row in scores[start * nq..(start + len) * nq].chunks_exact(nq) {
                for (m, &s) in maxes.iter_mut().zip(row) {
                    *m = m.max(s);
                }
            }
            top.push(doc, maxes.iter().sum());
            start += len;
        }
        Ok(())
    }

    /// Every document scored: decompressed, or exactly from the f16 embeddings under the default
    /// exact tier (then the optional rescoring, as for PLAID).
    fn exhaustive_one(
        &self,
        query: &PreparedQuery,
        params: &SearchParams,
        laps: &mut Laps<'_>,
        deleted: &[u32],
    ) -> Result<Vec<Hit>> {
        let mut all: Vec<u32> = (0..self.n_docs() as u32).collect();
        remove_sorted(&mut all, deleted);
        let qt = PackedMat::pack(Mat::dense(query.tokens(), query.len(), self.dim).t());
        self.final_scores(query, &qt, &all, params, laps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cell_scan_matches_a_full_sort(
            vals in proptest::collection::vec(-8i32..8, 1..600),
            nq in 1usize..5,
            n in 1usize..17,
        ) {
            let rows = vals.len() / nq;
            prop_assume!(rows > 0);
            let scores: Vec<f32> = vals[..rows * nq].iter().map(|&v| v as f32 / 4.0).collect();
            let n = n.min(rows);
            let mut got = Vec::new();
            top_cells_by_column(&scores, nq, n, &mut got);
            let mut want = Vec::new();
            for q in 0..nq {
                let col = |j: u32| scores[j as usize * nq + q];
                let mut all: Vec<u32> = (0..rows as u32).collect();
                all.sort_by(|&a, &b| col(b).total_cmp(&col(a)).then(a.cmp(&b)));
                want.extend_from_slice(&all[..n]);
            }
            prop_assert_eq!(got, want);
        }

        /// Cells picked from perturbed scores (standing in for bf16 rounding), then refined,
        /// are exactly the f32 selection whenever the true best cells were among those picked.
        #[test]
        fn refined_cells_match_the_f32_selection(
            cents in proptest::collection::vec(-4i32..5, 8 * 40),
            toks in proptest::collection::vec(-4i32..5, 8 * 3),
            noise in proptest::collection::vec(-2i32..3, 40 * 3),
            ncells in 1usize..4,
        ) {
            let (dim, c, nq, pick) = (8, 40, 3, 8);
            let centroids: Vec<f32> = cents.iter().map(|&v| v as f32 / 4.0).collect();
            let tokens: Vec<f32> = toks.iter().map(|&v| v as f32 / 4.0).collect();
            let exact: Vec<f32> = (0..c * nq)
                .map(|i| dot(&tokens[(i % nq) * dim..][..dim], &centroids[(i / nq) * dim..][..dim]))
                .collect();
            // Perturbations of up to 0.1, so near ties may swap.
            let mut rounded: Vec<f32> = exact.iter().zip(&noise).map(|(&e, &n)| e + n as f32 / 20.0).collect();
            let mut cells = Vec::new();
            top_cells_by_column(&rounded, nq, pick, &mut cells);
            let picked = cells.clone();
            refine_cells(&tokens, &centroids, dim, &mut rounded, &mut cells, pick, ncells);
            let mut want = Vec::new();
            top_cells_by_column(&exact, nq, ncells, &mut want);
            for q in 0..nq {
                let truth = &want[q * ncells..(q + 1) * ncells];
                if truth.iter().all(|j| picked[q * pick..(q + 1) * pick].contains(j)) {
                    prop_assert_eq!(&cells[q * ncells..(q + 1) * ncells], truth);
                }
                for &j in &picked[q * pick..(q + 1) * pick] {
                    prop_assert_eq!(rounded[j as usize * nq + q], exact[j as usize * nq + q]);
                }
            }
        }
    }
}
