//! Building and opening indexes.

mod build;
mod compressed;
mod decode_scale;
mod sample;
mod source;
pub(crate) mod warp_layout;

pub use build::{check_values, read_doc_ids, BuildOptions, IndexBuilder};
pub use compressed::{
    sample_docs, Codebook, CompressedBuilder, CompressedParams, FLUSH_TOKENS, IVF_BLOCK_ENTRIES,
    MIN_POINTS_PER_CENTROID,
};
pub use sample::{TrainingSample, DEFAULT_TRAIN_MEMORY};
pub use source::{
    build_from_source, stream_documents, BuildStage, InMemory, SourceBuild, SourceBuilt, TokenSource,
};

use std::path::Path;

/// The subdirectory of an index holding its BM25 sub-index (built with `--bm25`; read by the
/// `rerank` feature's BM25 retriever).
pub const BM25_DIR: &str = "bm25";

use index_format::{IndexMeta, IndexReader};

use crate::error::{EngineError, Result};
use crate::search::plaid::{Compressed, CompressedState};
use crate::search::{exhaustive, Hit, SearchParams, SearchResults, StageTimes};
use kernels::maxsim::PreparedQuery;
use rayon::prelude::*;

/// The largest magnitude of a query value [`Index::search`] accepts: with document values at
/// most 65504 (f16), a score stays far below f32's 3.4e38 for any realistic dimension and query
/// length (1e18 · 65504 · 4096 dims · 4096 tokens ≈ 1.1e30).
pub const MAX_QUERY_VALUE: f32 = 1e18;

/// An open index: memory-mapped files plus the searchers over them.
#[derive(Debug)]
pub struct Segment {
    reader: IndexReader,
    compressed: Option<CompressedState>,
}

impl Segment {
    /// Opens the index in `dir` (cheap checks only; see [`Index::verify`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let reader = IndexReader::open(dir)?;
        let compressed = CompressedState::load(&reader)?;
        Ok(Self { reader, compressed })
    }

    /// Checks every checksum and offset of the index.
    pub fn verify(&self) -> Result<()> {
        Ok(self.reader.verify()?)
    }

    /// The metadata.
    pub fn meta(&self) -> &IndexMeta {
        self.reader.meta()
    }

    /// The underlying reader.
    pub fn reader(&self) -> &IndexReader {
        &self.reader
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.reader.meta().n_docs as usize
    }

    /// The external id of an internal document number.
    pub fn doc_id(&self, doc: u32) -> std::borrow::Cow<'_, str> {
        self.reader.doc_id(doc as usize)
    }

    /// `params` with the depths bounded by the corpus: `k`, `ndocs` and `rescore` above the
    /// number of documents ask for nothing more than all of them (and would otherwise size
    /// buffers by the request, e.g. `-k 2^40`).
    fn clamped(&self, params: &SearchParams) -> SearchParams {
        let n = self.n_docs();
        SearchParams {
            k: params.k.min(n),
            ndocs: params.ndocs.min(n.max(1)),
            rescore: params.rescore.map(|r| r.min(n)),
            ..params.clone()
        }
    }

    pub(crate) fn check_query(&self, query: &[f32]) -> Result<()> {
        let dim = self.meta().dim;
        if query.is_empty() {
            return Err(EngineError::InvalidArgument("empty query: it has no tokens".into()));
        }
        if !query.len().is_multiple_of(dim) {
            return Err(EngineError::DimMismatch {
                what: "the query".into(),
                expected: dim,
                got: query.len(),
            });
        }
        if let Some(i) = query.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::NonFinite { what: "the query".into(), row: i / dim, col: i % dim });
        }
        // A score sums, over query tokens, dot products with f16 document values (at most 65504
        // each): values this large would overflow f32 and give infinite scores.
        if let Some(i) = query.iter().position(|v| v.abs() > MAX_QUERY_VALUE) {
            return Err(EngineError::InvalidArgument(format!(
                "the query holds {:e} at token {}, dimension {}: query values must be within ±{MAX_QUERY_VALUE:e} \
                 so that scores stay finite",
                query[i],
                i / dim,
                i % dim
            )));
        }
        Ok(())
    }

    /// Exact MaxSim top-`k` of each query (row-major `[len × dim]` f32) over every document:
    /// the oracle that faster modes are checked against. It needs the exact embeddings: an
    /// uncompressed index, or a compressed one built with `store_f16`; otherwise it scores the
    /// decompressed vectors (as [`Index::search_decompressed`]).
    pub fn search_exhaustive(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_query(q)?;
        }
        let k = k.min(self.n_docs());
        if !self.reader.has_embeddings() {
            return self.search_decompressed(queries, k);
        }
        Ok(exhaustive::search(&self.reader, queries, k)?)
    }

    /// Whether the index is compressed (residual kind).
    pub fn is_compressed(&self) -> bool {
        self.compressed.is_some()
    }

    /// The in-memory state of a compressed index (centroids, codec), if it is compressed.
    pub fn compressed_state(&self) -> Option<&CompressedState> {
        self.compressed.as_ref()
    }

    /// The compressed view of the index, if it is compressed.
    pub fn compressed(&self) -> Option<Compressed<'_>> {
        self.compressed.as_ref().map(|s| Compressed::new(&self.reader, s))
    }

    /// Top-`k` of each query by MaxSim over every document's *decompressed* vectors (compressed
    /// indexes only): the oracle that separates PLAID's pruning error from quantisation error.
    pub fn search_decompressed(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        let k = k.min(self.n_docs());
        let params = SearchParams { k, exhaustive: true, rescore: Some(0), ..SearchParams::for_k(k) };
        if self.compressed.is_none() {
            return Err(EngineError::InvalidArgument(
                "the index is not compressed: nothing to decompress".into(),
            ));
        }
        self.search(queries, &params)
    }

    /// Searches each query (row-major `[len × dim]` f32): exhaustive exact MaxSim on an
    /// uncompressed index, the PLAID stages on a compressed one (see
    /// [`crate::search::plaid`]). Queries run in parallel.
    pub fn search(&self, queries: &[Vec<f32>], params: &SearchParams) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_query(q)?;
        }
        let params = &self.clamped(params);
        let Some(view) = self.compressed() else {
            return Ok(exhaustive::search(&self.reader, queries, params.k)?);
        };
        self.check_params(params)?;
        let dim = self.meta().dim;
        queries.par_iter().map(|q| view.search(&PreparedQuery::new(q, dim), params)).collect()
    }

    /// Searches one query as [`Index::search`] does, on the calling thread's rayon pool. When
    /// `times` is given, the time spent in each stage is added to it (see [`StageTimes`]; an
    /// uncompressed index charges everything to [`StageTimes::maxsim`]); otherwise no clock is
    /// read.
    pub fn search_one(
        &self,
        query: &[f32],
        params: &SearchParams,
        times: Option<&mut StageTimes>,
    ) -> Result<Vec<Hit>> {
        self.check_query(query)?;
        let params = &self.clamped(params);
        let Some(view) = self.compressed() else {
            let owned = [query.to_vec()];
            let start = times.as_ref().map(|_| std::time::Instant::now());
            let hits = exhaustive::search(&self.reader, &owned, params.k)?;
            if let (Some(t), Some(start)) = (times, start) {
                t.maxsim += start.elapsed();
            }
            return Ok(hits.into_iter().next().unwrap_or_default());
        };
        self.check_params(params)?;
        view.search_timed(&PreparedQuery::new(query, self.meta().dim), params, times)
    }

    fn check_params(&self, params: &SearchParams) -> Result<()> {
        if params.ncells == 0 || params.ndocs == 0 {
            return Err(EngineError::InvalidArgument("ncells and ndocs must be positive".into()));
        }
        if !params.centroid_score_threshold.is_finite() {
            return Err(EngineError::InvalidArgument("the centroid score threshold must be finite".into()));
        }
        Ok(())
    }

    /// Attaches external ids to hits.
    pub fn resolve(&self, hits: &[Hit]) -> SearchResults {
        hits.iter().map(|h| (self.doc_id(h.doc).into_owned(), h.score)).collect()
    }
}
