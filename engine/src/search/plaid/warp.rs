//! The WARP search mode ([`crate::search::SearchMode::Warp`]): candidates generated and scored per query token
//! from the compressed tokens of the centroids it probes, through per-query-token lookup
//! tables ([`kernels::warp`]), as in WARP (Scheerer et al., SIGIR 2025).
//!
//! For one query `Q` (`nq` tokens) over `C` centroids:
//!
//! 1. **Probe.** `S = C·Qᵀ` as in PLAID mode; each query token `q` probes its `nprobe` best
//!    centroids (re-scored in f32), and its **missing-score estimate** `m_q` is the score of the
//!    first probed centroid (best first) at which the probed centroids' token counts add up to
//!    `t_prime` (else the last probed one's): about what the best token of a document `q` did
//!    not reach scores.
//! 2. **Score.** Every token of a probed centroid `c` scores `(S[c, q] + Σ_p T_q[p][b_p]) · f`
//!    (its residual bytes `b_p` through `q`'s i8 table, `f` its norm factor), read from a
//!    centroid-grouped copy of the codes ([`WarpLayout`]: the tokens of each centroid
//!    together, position-major in blocks of 64, as the VBMI kernel reads them).
//! 3. **Reduce.** Per document and query token the best such score; a document's score is the
//!    sum over query tokens, with `m_q` for each query token that reached none of its tokens.
//! 4. **Rescore.** The best `warp_rescore` documents (at least `k`) are scored by search's
//!    final stage (the lookup tables of [`kernels::lut`] or the decoded vectors; the exact f16
//!    tier where the index keeps one) and the best `k` returned; with `warp_rescore` 0 the
//!    WARP scores are final.
//!
//! A segment that stores the centroid-grouped copy (format v7, built with
//! [`crate::CompressedParams::warp_layout`]) is read in place, memory-mapped. Otherwise the copy
//! is built in memory the first time the segment is searched this way (one pass over its codes
//! and residual bytes; about 1.3× the residual bytes plus 8 bytes per token) and kept for the
//! life of the opened index.

use std::cell::Cell;

use kernels::int8::{self, I8Columns, I8Rows};
use kernels::maxsim::{Kernel, PreparedQuery};
use kernels::ops::Mat;
use kernels::packed::PackedMat;
use kernels::prefetch::prefetch;
use kernels::select::{self, ColumnTop};
use kernels::warp::{block_sums, Codebook, TokenTables, BLOCK};
use rayon::prelude::*;

use half::f16;
use half::slice::HalfFloatSliceExt;
use index_format::{Component, WarpFiles};

use super::Compressed;
use crate::codec::{dot, Norm};
use crate::error::{EngineError, Result};
use crate::index::warp_layout;
use crate::search::stages::{Laps, Stage};
use crate::search::{Hit, SearchParams, TopK};

/// The tokens of a segment grouped by centroid, in blocks of [`BLOCK`] tokens, for the WARP
/// mode's scoring: read in place from the index's `warp_*` files (format v7), or built in
/// memory for an index without them.
#[derive(Debug)]
pub(crate) struct WarpLayout {
    positions: usize,
    /// Per centroid, its first block (`C + 1` entries: centroid `c` owns blocks
    /// `first_block[c] .. first_block[c + 1]`).
    first_block: Vec<u32>,
    /// Per centroid, its tokens.
    count: Vec<u32>,
    /// The slots, when built in memory (`None`: the index's stored files).
    owned: Option<OwnedSlots>,
    codebook: Codebook,
    /// The centroids in 8 bits, where the CPU has the fast product ([`int8::fast`]).
    centroids_i8: Option<I8Rows>,
}

/// The slots of a layout built in memory.
#[derive(Debug)]
struct OwnedSlots {
    /// Per block, `positions × BLOCK` residual bytes, position-major.
    codes: Vec<u8>,
    /// Per token slot, its document (`u32::MAX` for the padding of a centroid's last block).
    docs: Vec<u32>,
    /// Per token slot, the factor its score is multiplied by (0 for padding).
    scale: Vec<f32>,
}

/// The slots one search reads: in memory or mapped.
#[derive(Clone, Copy)]
struct Slots<'a> {
    codes: &'a [u8],
    docs: &'a [u32],
    scale: Scale<'a>,
    /// Whether the documents come from a file (unverified: each is checked against the
    /// document count before it indexes anything).
    mapped: bool,
}

/// Per token slot, the factor its score is multiplied by.
#[derive(Clone, Copy)]
enum Scale<'a> {
    F32(&'a [f32]),
    /// The stored factors (`warp_norms.f16`): converted exactly.
    F16(&'a [f16]),
    /// No factors (tokens not renormalised).
    One,
}

/// A segment's codes and documents, for [`warp_layout::group_range`].
struct ViewTokens<'v, 'a>(&'v Compressed<'a>);

impl warp_layout::TokenSource for ViewTokens<'_, '_> {
    fn n_docs(&self) -> usize {
        self.0.n_docs()
    }

    fn doc_codes(&self, doc: usize, out: &mut Vec<u32>) -> Result<std::ops::Range<usize>> {
        self.0.doc_codes(doc as u32, out)?;
        self.0.tokens(doc as u32)
    }
}

impl WarpLayout {
    /// Groups the tokens of `view` by centroid in memory: a counting pass over the codes, then
    /// one over the residual bytes. Tokens keep document order within their centroid.
    ///
    /// # Errors
    /// If the segment's codes or offsets are corrupt.
    pub(crate) fn build(view: &Compressed<'_>) -> Result<Self> {
        let state = view.state;
        let c = state.n_centroids;
        let positions = state.codec.packed_len();
        let source = ViewTokens(view);
        let (count, first_block) = warp_layout::count(&source, c)?;
        let factors = view.norm_factors()?;
        let (codes, docs, scale) = warp_layout::group_range(
            &source,
            &first_block,
            0..c,
            positions,
            view.residuals,
            factors.as_deref(),
            1.0,
            0.0,
        )?;
        Ok(Self::with_slots(view, first_block, count, Some(OwnedSlots { codes, docs, scale })))
    }

    /// The layout of `view`'s stored files: only the per-centroid counts are read.
    ///
    /// # Errors
    /// If the counts are corrupt (the reader checked them at open).
    fn stored(view: &Compressed<'_>, files: &WarpFiles<'_>) -> Result<Self> {
        let first_block = index_format::warp::block_starts(files.counts).ok_or_else(|| {
            EngineError::Format(index_format::FormatError::corrupt(
                view.dir.join(Component::WarpCounts.file_name()),
                "more blocks than can be addressed",
            ))
        })?;
        Ok(Self::with_slots(view, first_block, files.counts.to_vec(), None))
    }

    fn with_slots(
        view: &Compressed<'_>,
        first_block: Vec<u32>,
        count: Vec<u32>,
        owned: Option<OwnedSlots>,
    ) -> Self {
        let state = view.state;
        let codebook = Codebook::new(&state.codec.table());
        let centroids_i8 = int8::fast().then(|| I8Rows::new(&state.centroids, state.n_centroids, view.dim));
        WarpLayout { positions: state.codec.packed_len(), first_block, count, owned, codebook, centroids_i8 }
    }

    /// The slots to read: the owned ones, else `view`'s stored files.
    fn slots<'s>(&'s self, view: &Compressed<'s>) -> Option<Slots<'s>> {
        if let Some(o) = &self.owned {
            return Some(Slots {
                codes: &o.codes,
                docs: &o.docs,
                scale: Scale::F32(&o.scale),
                mapped: false,
            });
        }
        let files = view.warp_files?;
        let scale = files.norms.map_or(Scale::One, Scale::F16);
        Some(Slots { codes: files.codes, docs: files.docs, scale, mapped: true })
    }

    /// Bytes this layout holds in memory (a stored layout's files are mapped, not counted).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.owned.as_ref().map_or(0, |o| o.codes.len() + 4 * (o.docs.len() + o.scale.len()))
            + 4 * (self.first_block.len() + self.count.len())
            + self.centroids_i8.as_ref().map_or(0, I8Rows::heap_bytes)
    }
}

/// Reads one value per 4 KiB page of `values`, so that the pages of a mapped file are in the
/// page tables.
fn touch_pages<T: Copy + Default>(values: &[T]) {
    let step = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    let mut sink = T::default();
    for i in (0..values.len()).step_by(step) {
        sink = std::hint::black_box(values[i]);
    }
    std::hint::black_box(sink);
}

/// How many bytes of the next probed centroid's codes are hinted to the cache ahead of their
/// use (and an eighth as many of its documents and factors: 4 bytes per token, against 32 code
/// bytes at dim 128, nbits 2).
const PREFETCH_BYTES: usize = 512;

/// Centroids per parallel block of the 8-bit centroid scores.
const I8_ROWS: usize = 2048;

/// From 8-bit centroid scores, this many cells per query token beyond `nprobe` are picked and
/// re-scored in f32. 8-bit rounding moves a unit-norm product at dim 128 by about 1e-3 (at most
/// a few times that), twice bf16's.
const I8_CELL_MARGIN: usize = 8;

/// One thread's buffers for the WARP mode, reused across queries.
#[derive(Default)]
struct WarpBuffers {
    /// Per document, its best score against the query token being scored (`-∞`: none yet).
    best: Vec<f32>,
    /// The documents `best` holds a score for.
    touched: Vec<u32>,
    /// Table sums of one centroid's blocks.
    sums: Vec<i16>,
    /// One centroid's token factors, converted from the stored f16.
    factors: Vec<f32>,
}

thread_local! {
    static WARP_BUFFERS: Cell<WarpBuffers> = Cell::new(WarpBuffers::default());
    /// The calling thread's query tables, reused across queries (256 KiB for 32 query tokens
    /// at dim 128, nbits 2).
    static WARP_TABLES: Cell<TokenTables> = Cell::new(TokenTables::new());
    /// The calling thread's 8-bit scores of one block of centroids, reused across queries.
    static I8_SCORES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The sum over query tokens ([`Compressed::search_warp`]'s step 4), with buffers reused
/// across queries.
#[derive(Default)]
struct Merge {
    /// Per document, the sum of its query tokens' scores less their estimates (0: none).
    total: Vec<f32>,
    /// Per document, one bit: already a candidate (or deleted).
    seen: Vec<u64>,
    candidates: Vec<u32>,
}

thread_local! {
    static WARP_MERGE: Cell<Merge> = Cell::new(Merge::default());
}

impl Merge {
    /// The best `keep` documents of `reached` (per query token, its documents and their best
    /// token's score) by `Σ_q` (score, or the estimate where `q` did not reach the document),
    /// never one of `deleted`. Leaves the buffers zeroed for the next query.
    fn top(
        &mut self,
        reached: &[Vec<(u32, f32)>],
        probes: &[Probes],
        deleted: &[u32],
        n_docs: usize,
        keep: usize,
    ) -> Vec<Hit> {
        let Merge { total, seen, candidates } = self;
        if total.len() != n_docs {
            total.clear();
            total.resize(n_docs, 0.0);
            seen.clear();
            seen.resize(n_docs.div_ceil(64), 0);
        }
        let bit = |d: u32| (d as usize / 64, 1u64 << (d % 64));
        // Deleted documents count as seen, so they never become candidates.
        for &d in deleted.iter().filter(|&&d| (d as usize) < n_docs) {
            let (w, b) = bit(d);
            seen[w] |= b;
        }
        // Each document once, appended without a branch; the sums in query-token order, so the
        // same whatever the thread count.
        candidates.clear();
        candidates.resize(reached.iter().map(Vec::len).sum::<usize>() + 1, 0);
        let mut n = 0;
        for (list, p) in reached.iter().zip(probes) {
            for (i, &(d, s)) in list.iter().enumerate() {
                if let Some(&(ahead, _)) = list.get(i + SCATTER_AHEAD) {
                    prefetch(&total[ahead as usize..ahead as usize + 1]);
                }
                total[d as usize] += s - p.missing;
                let (w, b) = bit(d);
                candidates[n] = d;
                n += (seen[w] & b == 0) as usize;
                seen[w] |= b;
            }
        }
        candidates.truncate(n);
        let base: f32 = probes.iter().map(|p| p.missing).sum();
        let mut top = TopK::new(keep);
        for &d in candidates.iter() {
            top.push(d, base + total[d as usize]);
            total[d as usize] = 0.0;
            seen[d as usize / 64] = 0;
        }
        for &d in deleted.iter().filter(|&&d| (d as usize) < n_docs) {
            seen[d as usize / 64] = 0;
        }
        top.into_sorted()
    }
}

/// How many tokens (or documents) ahead the scattered updates of per-document sums hint their
/// entry to the cache.
const SCATTER_AHEAD: usize = 16;

/// One query token's probes: the probed centroids with their f32 scores, best first.
struct Probes {
    cells: Vec<(f32, u32)>,
    /// The missing-score estimate.
    missing: f32,
}

impl<'a> Compressed<'a> {
    /// The segment's centroid-grouped tokens, built on first use.
    fn warp_layout(&self) -> Result<&'a WarpLayout> {
        if let Some(layout) = self.state.warp.get() {
            return Ok(layout);
        }
        // Two threads may both build it; the first stored wins (the same bytes either way).
        let built = match &self.warp_files {
            Some(files) => WarpLayout::stored(self, files)?,
            None => WarpLayout::build(self)?,
        };
        let _ = self.state.warp.set(built);
        Ok(self.state.warp.get().expect("stored above"))
    }

    /// Builds the centroid-grouped copy WARP mode scores from now rather than at the first WARP
    /// search, and returns its size in memory in bytes. For an index that stores it (format v7,
    /// `warp_layout`), its per-centroid counts are read and its files' pages mapped (read from
    /// disk where not cached): do not call this where the index is larger than memory.
    ///
    /// # Errors
    /// If the segment's codes or offsets are corrupt.
    pub fn prepare_warp(&self) -> Result<usize> {
        let layout = self.warp_layout()?;
        if let Some(files) = self.warp_files.filter(|_| layout.owned.is_none()) {
            // A stored layout: every page mapped now (read from disk if it is not cached), so
            // that searches do not pay a page fault at each probed centroid's first use.
            touch_pages(files.codes);
            touch_pages(files.docs);
            touch_pages(files.norms.unwrap_or_default());
        }
        Ok(layout.heap_bytes())
    }

    /// A corruption of the stored layout found while searching (`verify` reports it too).
    fn corrupt_warp(&self, cell: u32) -> EngineError {
        let path = self.dir.join(Component::WarpDocs.file_name());
        EngineError::Format(index_format::FormatError::corrupt(
            path,
            format!("centroid {cell} lists a document past the last"),
        ))
    }

    /// The stored layout's files went missing from the view (not expected: state and view come
    /// from one reader).
    fn corrupt_warp_files(&self) -> EngineError {
        let path = self.dir.join(Component::WarpCodes.file_name());
        EngineError::Format(index_format::FormatError::corrupt(
            path,
            "the centroid-grouped layout is not mapped",
        ))
    }

    /// Per token, the factor its score is multiplied by: the stored inverse norms (format v6),
    /// the inverse norms of the decoded tokens of a unit-norm index without them, or `None`
    /// (1) when decoded tokens are not renormalised.
    fn norm_factors(&self) -> Result<Option<Vec<f32>>> {
        if let Some(n) = self.norms {
            return Ok(Some(n.iter().map(|v| v.to_f32()).collect()));
        }
        if !self.state.unit_norm {
            return Ok(None);
        }
        let dim = self.dim;
        let mut factors = Vec::with_capacity(self.n_tokens as usize);
        let (mut codes, mut decoded) = (Vec::new(), Vec::new());
        for doc in 0..self.n_docs() as u32 {
            let range = self.tokens(doc)?;
            self.doc_codes(doc, &mut codes)?;
            decoded.clear();
            decoded.resize(codes.len() * dim, 0.0);
            let pl = self.state.codec.packed_len();
            self.state.codec.decode_rows(
                &self.residuals[range.start * pl..range.end * pl],
                &codes,
                &self.state.centroids,
                Norm::Keep,
                &mut decoded,
            )?;
            for row in decoded.chunks_exact(dim) {
                let norm = dot(row, row).sqrt();
                factors.push(if norm > 0.0 { 1.0 / norm } else { 0.0 });
            }
        }
        Ok(Some(factors))
    }

    /// WARP-mode search of one query; see the module documentation.
    pub(super) fn search_warp(
        &self,
        query: &PreparedQuery,
        params: &SearchParams,
        laps: &mut Laps<'_>,
        deleted: &[u32],
    ) -> Result<Vec<Hit>> {
        let mut tables = WARP_TABLES.take();
        let result = self.search_warp_with(query, params, laps, deleted, &mut tables);
        WARP_TABLES.set(tables);
        result
    }

    /// [`Compressed::search_warp`] with the calling thread's query tables.
    fn search_warp_with(
        &self,
        query: &PreparedQuery,
        params: &SearchParams,
        laps: &mut Laps<'_>,
        deleted: &[u32],
        tables: &mut TokenTables,
    ) -> Result<Vec<Hit>> {
        let layout = self.warp_layout()?;
        let slots = layout.slots(self).ok_or_else(|| self.corrupt_warp_files())?;
        let (nq, dim, c) = (query.len(), self.dim, self.state.n_centroids);
        let qt = PackedMat::pack(Mat::dense(query.tokens(), nq, dim).t());
        let nprobe = params.nprobe_for(self.n_tokens, c);
        let centroids = &self.state.centroids;
        let score =
            |token: &[f32], j: u32| (dot(token, &centroids[j as usize * dim..(j as usize + 1) * dim]), j);
        // Per query token, the cells picked by every centroid's score: from 8-bit products where
        // the CPU has them (WARP needs only the probes' scores, which are re-scored in f32 below:
        // a few more cells are picked so that rounding cannot swap one at the edge), else from
        // the product PLAID's stage 1 runs.
        let picked: Vec<Vec<(f32, u32)>> = match layout
            .centroids_i8
            .as_ref()
            .filter(|_| params.bf16_centroid_scores)
        {
            Some(rows) => {
                let cols = I8Columns::new(query.tokens(), nq, dim);
                let pick = (nprobe + I8_CELL_MARGIN).min(c);
                // Each block's scores are chosen from while they are in cache, and the blocks'
                // choices merged: the full matrix (4 MiB for 32,768 centroids and 32 query tokens)
                // is never written out. The blocks are the same whatever the thread count.
                let n_blocks = c.div_ceil(I8_ROWS);
                let blocks: Vec<Vec<Vec<(f32, u32)>>> = (0..n_blocks)
                    .into_par_iter()
                    .with_min_len(n_blocks.div_ceil(rayon::current_num_threads()))
                    .fold(
                        || ColumnTop::new(nq, pick),
                        |mut top, i| {
                            let (first, n) = (i * I8_ROWS, I8_ROWS.min(c - i * I8_ROWS));
                            // Every element is written: a reused buffer is not zeroed.
                            let mut scores = I8_SCORES.take();
                            scores.resize(I8_ROWS * nq, 0.0);
                            let out = &mut scores[..n * nq];
                            int8::scores(rows, first, &cols, out);
                            top.feed(out, first as u32);
                            I8_SCORES.set(scores);
                            top
                        },
                    )
                    .map(ColumnTop::finish)
                    .collect();
                select::merge_columns(&blocks, pick)
            }
            None => {
                let (scores, rounded) = self.centroid_scores(query, &qt, params.bf16_centroid_scores);
                let pick = if rounded { (nprobe + super::BF16_CELL_MARGIN).min(c) } else { nprobe };
                let cells = super::best_cells(&scores, nq, c, pick);
                // `pick` per token (fewer only from NaN scores: corrupt centroids).
                (0..nq)
                    .map(|q| {
                        cells.get(q * pick..(q + 1) * pick).unwrap_or(&[]).iter().map(|&j| (0.0, j)).collect()
                    })
                    .collect()
            }
        };
        // The probes (their f32 scores and estimates) while the tables are filled, on two threads
        // where the pool has a free one.
        let (probes, ()) = rayon::join(
            || {
                // The picked cells re-scored in f32.
                let chosen: Vec<Vec<(f32, u32)>> = query
                    .tokens()
                    .chunks_exact(dim)
                    .zip(&picked)
                    .map(|(token, picked)| picked.iter().map(|&(_, j)| score(token, j)).collect())
                    .collect();
                let by_score = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
                chosen
                    .into_iter()
                    .map(|mut scored| {
                        // The best `nprobe`, best first (ties to the lower centroid).
                        if scored.len() > nprobe {
                            scored.select_nth_unstable_by(nprobe - 1, by_score);
                            scored.truncate(nprobe);
                        }
                        scored.sort_unstable_by(by_score);
                        let mut seen = 0usize;
                        let missing = scored
                            .iter()
                            .find(|&&(_, j)| {
                                seen += layout.count[j as usize] as usize;
                                seen >= params.warp_t_prime
                            })
                            .or(scored.last())
                            .map_or(0.0, |&(s, _)| s);
                        Probes { cells: scored, missing }
                    })
                    .collect::<Vec<Probes>>()
            },
            || tables.fill(&layout.codebook, query.tokens(), nq),
        );
        let tables = &*tables;
        laps.lap(Stage::Candidates);
        let n_docs = self.n_docs();
        let kernel = Kernel::detect();
        // Per query token, the documents it reached and their best token's score, in order of
        // first reach (the same order on every run).
        let reach_into = |buf: &mut WarpBuffers, q: usize| -> Result<Vec<(u32, f32)>> {
            let WarpBuffers { best, touched, sums, factors } = buf;
            if best.len() != n_docs {
                best.clear();
                best.resize(n_docs, f32::NEG_INFINITY);
            }
            let cells = &probes[q].cells;
            // Room for every token probed: a document is appended at its first token without a
            // branch (whether it is new is not predictable).
            let tokens: usize = cells.iter().map(|&(_, j)| layout.count[j as usize] as usize).sum();
            touched.resize(tokens + 1, 0);
            let mut n_touched = 0;
            let (table, step, positions) = (tables.table(q), tables.step(q), layout.positions);
            let span = |cell: u32| {
                let c = cell as usize;
                layout.first_block[c] as usize..layout.first_block[c + 1] as usize
            };
            for (i, &(score, cell)) in cells.iter().enumerate() {
                // The start of the next centroid's bytes loads while this one is scored (each
                // probed centroid is a jump elsewhere in the layout; the hardware follows on from
                // there). Its first lines only: hinting every line stalls on the fill buffers.
                if let Some(&(_, next)) = cells.get(i + 1) {
                    let b = span(next).start;
                    let head = |len: usize, bytes: usize| len.min(bytes);
                    let codes = &slots.codes[b * positions * BLOCK..];
                    prefetch(&codes[..head(codes.len(), PREFETCH_BYTES)]);
                    let docs = &slots.docs[b * BLOCK..];
                    prefetch(&docs[..head(docs.len(), PREFETCH_BYTES / 8)]);
                    match slots.scale {
                        Scale::F32(f) => {
                            prefetch(&f[b * BLOCK..][..head(f.len() - b * BLOCK, PREFETCH_BYTES / 8)])
                        }
                        Scale::F16(f) => {
                            prefetch(&f[b * BLOCK..][..head(f.len() - b * BLOCK, PREFETCH_BYTES / 16)])
                        }
                        Scale::One => {}
                    }
                }
                let blocks = span(cell);
                let n = layout.count[cell as usize] as usize;
                sums.resize(blocks.len() * BLOCK, 0);
                let sums = &mut sums[..blocks.len() * BLOCK];
                block_sums(
                    kernel,
                    table,
                    positions,
                    &slots.codes[blocks.start * positions * BLOCK..blocks.end * positions * BLOCK],
                    sums,
                );
                let first = blocks.start * BLOCK;
                let docs = &slots.docs[first..first + n];
                // A stored layout is read unverified: its documents index `best`.
                if slots.mapped && docs.iter().fold(0, |m, &d| m.max(d)) as usize >= n_docs {
                    return Err(self.corrupt_warp(cell));
                }
                let scale: &[f32] = match slots.scale {
                    Scale::F32(f) => &f[first..first + n],
                    Scale::F16(f) => {
                        factors.resize(n, 0.0);
                        f[first..first + n].convert_to_f32_slice(factors);
                        factors
                    }
                    Scale::One => {
                        factors.clear();
                        factors.resize(n, 1.0);
                        factors
                    }
                };
                for (i, ((&d, &f), &sum)) in docs.iter().zip(scale).zip(sums.iter()).enumerate() {
                    // `best` outgrows the L2 cache on large segments (4 bytes per document):
                    // the entry of a later token starts loading now.
                    if let Some(&ahead) = docs.get(i + SCATTER_AHEAD) {
                        prefetch(&best[ahead as usize..ahead as usize + 1]);
                    }
                    let s = (score + sum as f32 * step) * f;
                    let b = &mut best[d as usize];
                    touched[n_touched] = d;
                    n_touched += (*b == f32::NEG_INFINITY) as usize;
                    *b = if s > *b { s } else { *b };
                }
            }
            let out = touched[..n_touched]
                .iter()
                .map(|&d| {
                    let s = best[d as usize];
                    best[d as usize] = f32::NEG_INFINITY;
                    (d, s)
                })
                .collect();
            Ok(out)
        };
        let reach = |q: usize| -> Result<Vec<(u32, f32)>> {
            let mut buf = WARP_BUFFERS.take();
            let result = reach_into(&mut buf, q);
            WARP_BUFFERS.set(buf);
            result
        };
        let reached: Vec<Vec<(u32, f32)>> =
            (0..nq).into_par_iter().with_min_len(4).map(reach).collect::<Result<_>>()?;
        // A document's score: the sum of every query token's estimate, then for each query
        // token that reached it, its best token's score in place of the estimate (added in
        // query-token order, so the same whatever the thread count).
        let rescore = params.warp_rescore_for(n_docs);
        let keep = if rescore > 0 { rescore.max(params.k) } else { params.k };
        let mut merge = WARP_MERGE.take();
        let best = merge.top(&reached, &probes, deleted, n_docs, keep);
        WARP_MERGE.set(merge);
        laps.lap(Stage::Pruning);
        if rescore == 0 {
            return Ok(best);
        }
        let mut survivors: Vec<u32> = best.iter().map(|h| h.doc).collect();
        survivors.sort_unstable();
        self.final_scores(query, &qt, &survivors, params, laps)
    }
}
