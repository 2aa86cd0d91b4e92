//! The embedded ranker: an index a long-running service opens once and queries from many
//! threads, that reranks a first stage's candidates by their external ids, and that can be
//! updated in place (documents added and deleted) while it is being searched.
//!
//! ```
//! use engine::store::{AddOptions, Index, Query, Writer};
//! use engine::{BuildOptions, IndexBuilder, SearchParams};
//!
//! # fn main() -> engine::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let path = tmp.path().join("my-index");
//! // An index of three 2-token documents of dimension 8 (usually `colbert-index build`).
//! let doc = |hot: usize| -> Vec<f32> { (0..16).map(|i| if i % 8 == hot { 1.0 } else { 0.0 }).collect() };
//! let mut builder = IndexBuilder::create(&path, 8, BuildOptions::default())?;
//! for (id, hot) in [("doc-1", 1), ("doc-2", 2), ("doc-3", 3)] {
//!     builder.add(id, &doc(hot))?;
//! }
//! builder.finish()?;
//!
//! let index = Index::open(&path)?; // memory-mapped; Send + Sync; cheap to clone
//! let tokens = doc(2);              // a 2-token query, row-major [len × dim]
//! let q = Query::tokens(&tokens, 8)?;
//! let top = index.search(q, 2, &SearchParams::for_k(2))?;
//! assert_eq!(top[0].id, "doc-2");
//! let reranked = index.rerank(q, &["doc-3", "doc-2", "doc-9"], 10)?;
//! assert_eq!(reranked.hits[0].id, "doc-2");
//! assert_eq!(reranked.missing, ["doc-9"]); // unknown ids are reported, not dropped
//!
//! // Update in place: one writer at a time; readers see the change after `reload`.
//! let mut writer = Writer::open(&path, "example")?;
//! let mut batch = writer.begin_add(AddOptions::default())?;
//! batch.add("doc-4", &doc(4))?;
//! batch.commit()?;
//! writer.delete(&["doc-3"])?;
//! let index = index.reload()?;
//! assert_eq!(index.n_docs(), 3);
//! assert_eq!(index.rerank(q, &["doc-3", "doc-4"], 10)?.missing, ["doc-3"]);
//! # Ok(())
//! # }
//! ```
//!
//! An index is a base segment plus the segments and deletions named by its manifest
//! ([`index_format::manifest`]). [`Index`] is one consistent snapshot of them: updates published
//! after it was opened are seen by [`Index::reload`], never half-way.

mod update;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use index_format::{IndexMeta, Manifest};
use rayon::prelude::*;

pub use update::{AddOptions, AddReport, Adding, CompactOptions, Compacted, DeleteReport, Writer};

use crate::error::{EngineError, Result};
use crate::index::Segment;
use crate::search::{Hit, SearchParams};
use kernels::maxsim::PreparedQuery;
use kernels::prefetch::prefetch;

/// How many times [`Index::open`] retries when the index directory was replaced (compacted or
/// rebuilt with overwrite) while it was being opened.
const OPEN_ATTEMPTS: usize = 5;

/// A query: text, encoded with the index's model, or token embeddings.
#[derive(Debug, Clone, Copy)]
pub enum Query<'a> {
    /// Text, encoded with the model recorded in the index (loaded once, on first use).
    Text(&'a str),
    /// Row-major `[len × dim]` token embeddings.
    Tokens(Tokens<'a>),
}

/// A borrowed row-major `[len × dim]` f32 matrix of query token embeddings.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> Tokens<'a> {
    /// Views `data` as `data.len() / dim` tokens.
    ///
    /// # Errors
    /// If `dim` is 0, `data` is empty or not a whole number of tokens, or holds NaN or infinity.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 || data.is_empty() || !data.len().is_multiple_of(dim) {
            return Err(EngineError::InvalidArgument(format!(
                "a query of {} values is not a whole, non-zero number of {dim}-dimensional tokens",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::NonFinite { what: "the query".into(), row: i / dim, col: i % dim });
        }
        Ok(Tokens { data, dim })
    }

    /// The values, row-major.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether there are no tokens (never, for a checked matrix).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<'a> Query<'a> {
    /// A query of token embeddings (see [`Tokens::new`]).
    ///
    /// # Errors
    /// As [`Tokens::new`].
    pub fn tokens(data: &'a [f32], dim: usize) -> Result<Self> {
        Tokens::new(data, dim).map(Query::Tokens)
    }
}

impl<'a> From<&'a str> for Query<'a> {
    fn from(text: &'a str) -> Self {
        Query::Text(text)
    }
}

impl<'a> From<Tokens<'a>> for Query<'a> {
    fn from(tokens: Tokens<'a>) -> Self {
        Query::Tokens(tokens)
    }
}

/// What [`Index::verify`] checked besides the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The BM25 sub-index (checked only in builds with the `rerank` feature).
    #[cfg(feature = "rerank")]
    pub bm25: crate::rerank::bm25::Bm25Check,
}

/// A result: a document's external id and its MaxSim score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredDoc {
    /// The external document id.
    pub id: String,
    /// MaxSim score.
    pub score: f32,
}

/// What [`Index::rerank`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reranked {
    /// The best `k` candidates, best first (ties by id).
    pub hits: Vec<ScoredDoc>,
    /// The candidate ids that are not in the index (never added, or deleted), in the order
    /// given, each once.
    pub missing: Vec<String>,
}

/// One segment of a snapshot: immutable once published, so shared between snapshots.
#[derive(Debug)]
pub(crate) struct Part {
    name: String,
    seg: Segment,
    /// The id table built in memory, for segments written before format v5.
    ids: OnceLock<Vec<u32>>,
}

impl Part {
    fn open(dir: &Path, name: &str) -> Result<Self> {
        let path = if name == index_format::manifest::BASE { dir.to_path_buf() } else { dir.join(name) };
        Ok(Part { name: name.to_string(), seg: Segment::open(&path)?, ids: OnceLock::new() })
    }

    /// The id hash table: the stored one (format v5 on), else one built in memory on first use.
    fn slots(&self) -> &[u32] {
        let reader = self.seg.reader();
        if let Some(slots) = reader.doc_id_table() {
            return slots;
        }
        self.ids.get_or_init(|| {
            let n = self.seg.n_docs();
            index_format::idhash::build(n, |d| reader.doc_id_bytes(d).unwrap_or_default()).unwrap_or_default()
        })
    }

    /// The document with external id `id`, for every id of `ids` into `out` (one answer per
    /// id), with the memory of later lookups loaded ahead: one at a time, each lookup waits on
    /// two or three cache misses in turn (its slot, then its document's id bytes).
    fn find_many(&self, ids: &[&str], out: &mut [Option<u32>]) {
        /// How many ids ahead each stage runs.
        const AHEAD: usize = 8;
        let (reader, slots) = (self.seg.reader(), self.slots());
        let mut home = vec![None; ids.len()];
        for i in 0..ids.len() + 2 * AHEAD {
            if let Some(id) = ids.get(i) {
                home[i] = index_format::idhash::home_slot(slots, id.as_bytes());
                if let Some(s) = home[i] {
                    prefetch(&slots[s..s + 1]);
                }
            }
            if let Some(&Some(s)) = i.checked_sub(AHEAD).and_then(|j| home.get(j)) {
                if let Some(bytes) = reader.doc_id_bytes(slots[s] as usize) {
                    prefetch(bytes);
                }
            }
            if let Some(j) = i.checked_sub(2 * AHEAD).filter(|&j| j < ids.len()) {
                out[j] = index_format::idhash::lookup(slots, ids[j].as_bytes(), |d| {
                    reader.doc_id_bytes(d as usize)
                });
            }
        }
    }
}

#[derive(Debug)]
struct Snapshot {
    dir: PathBuf,
    /// The directory's inode when opened: a replaced directory (compaction, overwrite) has
    /// another.
    dir_id: u64,
    manifest: Manifest,
    parts: Vec<Arc<Part>>,
    #[cfg(feature = "text")]
    encoder: OnceLock<std::result::Result<Arc<crate::encoder::Encoder>, String>>,
}

/// An open index: one consistent snapshot of its segments and deletions, memory-mapped.
/// `Send + Sync` and cheap to clone (one reference count): open it once and share it between
/// threads.
#[derive(Debug, Clone)]
pub struct Index {
    inner: Arc<Snapshot>,
}

#[cfg(unix)]
fn dir_id(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| m.ino()).unwrap_or(0)
}

#[cfg(not(unix))]
fn dir_id(_dir: &Path) -> u64 {
    0
}

impl Index {
    /// Opens the index in `dir`: its manifest (if it was ever updated) and every live segment,
    /// memory-mapped with the cheap checks of [`Segment::open`]. If the directory is replaced
    /// while it is being opened (a compaction or a rebuild finishing), it opens the new one.
    ///
    /// # Errors
    /// If a file is missing or corrupt (named in the error), or the segments disagree.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Self::open_reusing(dir.as_ref(), None)
    }

    /// A snapshot of the index's current state: `self` again if nothing was published since it
    /// was opened, else the new state (segments unchanged since are shared, not reopened).
    ///
    /// # Errors
    /// As [`Index::open`].
    pub fn reload(&self) -> Result<Index> {
        let s = &self.inner;
        if dir_id(&s.dir) == s.dir_id {
            let current = Manifest::read(&s.dir)?;
            let same = match &current {
                Some(m) => m.generation == s.manifest.generation && s.manifest.generation > 0,
                None => s.manifest.generation == 0,
            };
            if same {
                return Ok(self.clone());
            }
        }
        Self::open_reusing(&s.dir, Some(s))
    }

    fn open_reusing(dir: &Path, previous: Option<&Snapshot>) -> Result<Index> {
        let mut last_err = None;
        for _ in 0..OPEN_ATTEMPTS {
            let id = dir_id(dir);
            match Self::try_open(dir, id, previous.filter(|p| p.dir_id == id)) {
                Ok(index) if dir_id(dir) == id => return Ok(index),
                Ok(_) => {}
                Err(e) if dir_id(dir) != id => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            EngineError::InvalidArgument(format!(
                "{}: the index kept being replaced while opening it",
                dir.display()
            ))
        }))
    }

    fn try_open(dir: &Path, dir_id: u64, previous: Option<&Snapshot>) -> Result<Index> {
        let manifest = Manifest::read(dir)?;
        let base = match previous.and_then(|p| p.parts.first()) {
            Some(p) => p.clone(),
            None => Arc::new(Part::open(dir, index_format::manifest::BASE)?),
        };
        let manifest = manifest.unwrap_or_else(|| Manifest::base_only(base.seg.n_docs() as u64));
        let manifest_path = dir.join(index_format::Component::Manifest.file_name());
        let mut parts = vec![base];
        for entry in &manifest.segments[1..] {
            let reused = previous.and_then(|p| p.parts.iter().find(|x| x.name == entry.name)).cloned();
            let part = match reused {
                Some(p) => p,
                None => Arc::new(Part::open(dir, &entry.name)?),
            };
            parts.push(part);
        }
        let base_meta = parts[0].seg.meta();
        for (part, entry) in parts.iter().zip(&manifest.segments) {
            let meta = part.seg.meta();
            if meta.n_docs != entry.n_docs {
                return Err(index_format::FormatError::corrupt(
                    &manifest_path,
                    format!(
                        "segment {} has {} documents, the manifest says {}",
                        entry.name, meta.n_docs, entry.n_docs
                    ),
                )
                .into());
            }
            if meta.dim != base_meta.dim || meta.kind != base_meta.kind {
                return Err(index_format::FormatError::corrupt(
                    &manifest_path,
                    format!("segment {} differs from the base segment in dimension or kind", entry.name),
                )
                .into());
            }
        }
        Ok(Index {
            inner: Arc::new(Snapshot {
                dir: dir.to_path_buf(),
                dir_id,
                manifest,
                parts,
                // The same base segment (same directory) records the same model: a loaded
                // encoder carries over to the new snapshot.
                #[cfg(feature = "text")]
                encoder: previous
                    .and_then(|p| p.encoder.get().cloned())
                    .map(OnceLock::from)
                    .unwrap_or_default(),
            }),
        })
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The base segment's metadata (dimension, kind, model, build parameters).
    pub fn meta(&self) -> &IndexMeta {
        self.inner.parts[0].seg.meta()
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.meta().dim
    }

    /// Number of live documents (added and not deleted).
    pub fn n_docs(&self) -> u64 {
        self.inner.manifest.live_docs()
    }

    /// The manifest of this snapshot (for an index never updated, its base segment alone).
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The live segments, oldest (the base) first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.inner.parts.iter().map(|p| &p.seg)
    }

    /// Builds now, for every compressed segment, what WARP mode searches
    /// ([`crate::SearchMode::Warp`]: the tokens regrouped by centroid, kept in memory while this
    /// snapshot is open) instead of at the first WARP search, which would otherwise pay for it
    /// (about 2 s per 10M tokens). A segment that stores the grouping (format v7, built with
    /// `warp_layout`) has nothing to build: its files' pages are mapped now instead of at each
    /// probed centroid's first use (read from disk where not cached; skip this call for an
    /// index larger than memory). Returns the bytes held in memory.
    ///
    /// # Errors
    /// If a segment's codes or offsets are corrupt.
    pub fn prepare_warp(&self) -> Result<usize> {
        let mut bytes = 0usize;
        for part in &self.inner.parts {
            if let Some(view) = part.seg.compressed() {
                bytes = bytes.saturating_add(view.prepare_warp()?);
            }
        }
        Ok(bytes)
    }

    /// Bytes of the centroid-grouped layout stored in this snapshot's segments (format v7,
    /// `warp_layout`; 0 where none stores it): what [`Index::prepare_warp`] maps, for a caller
    /// deciding whether it fits in memory.
    pub fn stored_warp_bytes(&self) -> u64 {
        self.inner
            .parts
            .iter()
            .filter_map(|p| p.seg.compressed())
            .map(|view| view.stored_warp_bytes())
            .fold(0u64, u64::saturating_add)
    }

    /// The deleted documents of segment `i` (strictly increasing).
    fn deleted(&self, i: usize) -> &[u32] {
        &self.inner.manifest.segments[i].deleted
    }

    /// Checks every checksum and offset of every segment, and the BM25 sub-index (`bm25/`)
    /// if there is one; the manifest was checked against the segments at open.
    ///
    /// # Errors
    /// The first problem found, naming the file.
    pub fn verify(&self) -> Result<Verified> {
        self.inner.parts.iter().try_for_each(|p| p.seg.verify())?;
        #[cfg(feature = "rerank")]
        return Ok(Verified { bm25: crate::rerank::bm25::verify_in(self.dir())? });
        #[cfg(not(feature = "rerank"))]
        Ok(Verified {})
    }

    /// The external id of every live document, segment by segment (for tests and tools).
    pub fn live_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, part) in self.inner.parts.iter().enumerate() {
            let mut deleted = self.deleted(i).iter().peekable();
            for d in 0..part.seg.n_docs() as u32 {
                if deleted.peek() == Some(&&d) {
                    deleted.next();
                    continue;
                }
                out.push(part.seg.doc_id(d).into_owned());
            }
        }
        out
    }

    /// Where each live document of `ids` is: (segment position, document number), or `None`.
    fn locate_many(&self, ids: &[&str]) -> Vec<Option<(usize, u32)>> {
        let mut located = vec![None; ids.len()];
        // The ids not yet found live, by position; newest segment first: an id replaced in a
        // later segment is deleted in the earlier one anyway.
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        let mut names = Vec::new();
        let mut found = Vec::new();
        for (i, part) in self.inner.parts.iter().enumerate().rev() {
            if pending.is_empty() {
                break;
            }
            names.clear();
            names.extend(pending.iter().map(|&j| ids[j]));
            found.clear();
            found.resize(names.len(), None);
            part.find_many(&names, &mut found);
            let deleted = self.deleted(i);
            let mut f = found.iter();
            pending.retain(|&j| match f.next().copied().flatten() {
                Some(d) if deleted.binary_search(&d).is_err() => {
                    located[j] = Some((i, d));
                    false
                }
                _ => true,
            });
        }
        located
    }

    /// Where the live document `id` is: (segment position, document number).
    pub(crate) fn locate(&self, id: &str) -> Option<(usize, u32)> {
        self.locate_many(&[id])[0]
    }

    /// The query's token embeddings, encoding text with the index's model (loaded on first use
    /// and kept).
    fn query_tokens<'q>(&self, query: Query<'q>) -> Result<std::borrow::Cow<'q, [f32]>> {
        let tokens = self.unchecked_query_tokens(query)?;
        // The segments' own checks: finite, and small enough that scores cannot overflow.
        self.inner.parts[0].seg.check_query(&tokens)?;
        Ok(tokens)
    }

    fn unchecked_query_tokens<'q>(&self, query: Query<'q>) -> Result<std::borrow::Cow<'q, [f32]>> {
        let dim = self.dim();
        match query {
            Query::Tokens(t) => {
                if t.dim() != dim {
                    return Err(EngineError::DimMismatch {
                        what: "the query".into(),
                        expected: dim,
                        got: t.dim(),
                    });
                }
                Ok(std::borrow::Cow::Borrowed(t.data()))
            }
            #[cfg(not(feature = "text"))]
            Query::Text(_) => Err(EngineError::InvalidArgument(
                "text queries need the engine's `text` feature (this build has no encoder)".into(),
            )),
            #[cfg(feature = "text")]
            Query::Text(text) => {
                let encoder = self.encoder()?;
                let mut encoded = encoder.encode_queries(&[text])?;
                let tokens = encoded.pop().unwrap_or_default();
                if tokens.is_empty() {
                    return Err(EngineError::InvalidArgument(format!("query {text:?} has no tokens")));
                }
                Ok(std::borrow::Cow::Owned(tokens))
            }
        }
    }

    /// The model recorded in the index, loaded once.
    #[cfg(feature = "text")]
    pub fn encoder(&self) -> Result<Arc<crate::encoder::Encoder>> {
        let loaded = self.inner.encoder.get_or_init(|| load_recorded_encoder(self.meta(), self.dir()));
        loaded.clone().map_err(|problem| EngineError::Model { path: self.dir().to_path_buf(), problem })
    }

    /// The `k` best live documents for `query`: PLAID search on each segment of a compressed
    /// index (deleted documents removed before scoring), exact exhaustive MaxSim on an
    /// uncompressed one; results best first, ties by id.
    ///
    /// # Errors
    /// If the query's dimension differs from the index's, its text cannot be encoded, or a file
    /// is corrupt.
    pub fn search(&self, query: Query<'_>, k: usize, params: &SearchParams) -> Result<Vec<ScoredDoc>> {
        let tokens = self.query_tokens(query)?;
        let stored: u64 = self.inner.manifest.segments.iter().map(|s| s.n_docs).sum();
        let k = k.min(usize::try_from(stored).unwrap_or(usize::MAX));
        let params = SearchParams { k, ..params.clone() };
        let prepared = PreparedQuery::new(&tokens, self.dim());
        let mut all = Vec::new();
        for (i, part) in self.inner.parts.iter().enumerate() {
            let deleted = self.deleted(i);
            let hits = match part.seg.compressed() {
                Some(view) => view.search_excluding(&prepared, &params, None, deleted)?,
                None => {
                    let deep = SearchParams { k: k.saturating_add(deleted.len()), ..params.clone() };
                    let mut hits = part.seg.search_one(&tokens, &deep, None)?;
                    hits.retain(|h| deleted.binary_search(&h.doc).is_err());
                    hits.truncate(k);
                    hits
                }
            };
            all.extend(
                hits.into_iter()
                    .map(|h| ScoredDoc { id: part.seg.doc_id(h.doc).into_owned(), score: h.score }),
            );
        }
        Ok(best_first(all, k))
    }

    /// [`Index::search`] for several queries, in parallel.
    ///
    /// # Errors
    /// The first query's error.
    pub fn search_batch(
        &self,
        queries: &[Query<'_>],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<ScoredDoc>>> {
        queries.par_iter().map(|q| self.search(*q, k, params)).collect()
    }

    /// Scores exactly the documents named by `candidates` (external ids, e.g. a first stage's
    /// results) by MaxSim against `query`, and returns the best `k`, best first (ties by id).
    /// Scores come from the exact f16 embeddings when the index keeps them, else from the
    /// decompressed residuals. An id given twice is scored once; ids not in the index (never
    /// added, or deleted) are listed in [`Reranked::missing`].
    ///
    /// # Errors
    /// As [`Index::search`].
    pub fn rerank<S: AsRef<str>>(&self, query: Query<'_>, candidates: &[S], k: usize) -> Result<Reranked> {
        let tokens = self.query_tokens(query)?;
        // Duplicates are dropped by document number once located (no hashing of the ids), and
        // among the missing ids by a set (the rare case).
        let mut missing_seen = HashSet::new();
        let mut missing = Vec::new();
        let mut by_part: Vec<Vec<u32>> = vec![Vec::new(); self.inner.parts.len()];
        let ids: Vec<&str> = candidates.iter().map(AsRef::as_ref).collect();
        for (id, at) in ids.iter().zip(self.locate_many(&ids)) {
            match at {
                Some((i, d)) => by_part[i].push(d),
                None if missing_seen.insert(*id) => missing.push(id.to_string()),
                None => {}
            }
        }
        let mut found = 0;
        for docs in &mut by_part {
            docs.sort_unstable();
            docs.dedup();
            found += docs.len();
        }
        let prepared = PreparedQuery::new(&tokens, self.dim());
        let k = k.min(found);
        let mut all = Vec::new();
        for (part, docs) in self.inner.parts.iter().zip(&by_part) {
            if docs.is_empty() {
                continue;
            }
            let hits = match part.seg.compressed() {
                Some(view) => view.score_candidates(&prepared, docs, k)?,
                None => score_exact(&part.seg, &prepared, docs, k)?,
            };
            all.extend(
                hits.into_iter()
                    .map(|h| ScoredDoc { id: part.seg.doc_id(h.doc).into_owned(), score: h.score }),
            );
        }
        Ok(Reranked { hits: best_first(all, k), missing })
    }
}

/// Exact MaxSim of `docs` of an uncompressed segment, the best `k`.
fn score_exact(seg: &Segment, query: &PreparedQuery, docs: &[u32], k: usize) -> Result<Vec<Hit>> {
    let reader = seg.reader();
    Ok(crate::search::exhaustive::top_of(query, docs, k, 256, |d| reader.doc_embeddings(d as usize))?)
}

/// The best `k` of `all`: higher score first, ties by id.
fn best_first(mut all: Vec<ScoredDoc>, k: usize) -> Vec<ScoredDoc> {
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    all.truncate(k);
    all
}

/// Loads the model an index records (its directory, checked against the recorded identity).
#[cfg(feature = "text")]
fn load_recorded_encoder(
    meta: &IndexMeta,
    dir: &Path,
) -> std::result::Result<Arc<crate::encoder::Encoder>, String> {
    let Some(recorded) = &meta.encoder else {
        return Err("the index was built from precomputed embeddings: query it with token embeddings".into());
    };
    let Some(model) = recorded["model_dir"].as_str() else {
        return Err("the index does not record its model directory".into());
    };
    let options = crate::encoder::EncoderOptions {
        precision: crate::encoder::Precision::F32,
        ..crate::encoder::EncoderOptions::default()
    };
    let encoder = crate::encoder::Encoder::load(Path::new(model), options).map_err(|e| e.to_string())?;
    encoder
        .check_identity(recorded)
        .map_err(|e| format!("the model in {model} is not the one {} was built with: {e}", dir.display()))?;
    Ok(Arc::new(encoder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Index>();
    }

    #[test]
    fn results_are_ordered_by_score_then_id() {
        let d = |id: &str, score| ScoredDoc { id: id.into(), score };
        let got = best_first(vec![d("b", 1.0), d("a", 1.0), d("c", 2.0), d("d", 0.5)], 3);
        assert_eq!(got, vec![d("c", 2.0), d("a", 1.0), d("b", 1.0)]);
    }
}
