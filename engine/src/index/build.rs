//! Writing an uncompressed index (`build --nbits 16`) from a stream of documents.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use index_format::{
    bytes::as_bytes, Component, ComponentWriter, IndexKind, IndexMeta, IndexWriter, FORMAT_VERSION,
};

use crate::error::{EngineError, Result};

/// Options of an index build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Replace an existing index at the destination (atomically, on success only).
    pub overwrite: bool,
    /// The encoder's identity and settings, recorded in the metadata.
    pub encoder: Option<serde_json::Value>,
    /// Build parameters, recorded in the metadata.
    pub build_params: serde_json::Value,
}

/// Streams documents into a new uncompressed index. Nothing is visible at the destination until
/// [`IndexBuilder::finish`] succeeds; dropping the builder discards the partial files.
#[derive(Debug)]
pub struct IndexBuilder {
    writer: IndexWriter,
    embeddings: ComponentWriter,
    dim: usize,
    doc_offsets: Vec<u64>,
    ids: Vec<u8>,
    id_offsets: Vec<u64>,
    seen_ids: HashSet<String>,
    options: BuildOptions,
    scratch: Vec<f16>,
}

impl IndexBuilder {
    /// Starts an index of dimension `dim` at `dest`.
    pub fn create(dest: &Path, dim: usize, options: BuildOptions) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(8) {
            return Err(EngineError::InvalidArgument(format!(
                "embedding dimension {dim} is not supported: it must be a positive multiple of 8"
            )));
        }
        let writer = IndexWriter::create(dest, options.overwrite)?;
        Self::create_in(writer, dim, options)
    }

    /// [`IndexBuilder::create`] into a writer the caller made (e.g. a new segment of an index,
    /// [`IndexWriter::create_segment`]).
    pub fn create_in(writer: IndexWriter, dim: usize, options: BuildOptions) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(8) {
            return Err(EngineError::InvalidArgument(format!(
                "embedding dimension {dim} is not supported: it must be a positive multiple of 8"
            )));
        }
        let embeddings = writer.component(Component::Embeddings)?;
        Ok(Self {
            writer,
            embeddings,
            dim,
            doc_offsets: vec![0],
            ids: Vec::new(),
            id_offsets: vec![0],
            seen_ids: HashSet::new(),
            options,
            scratch: Vec::new(),
        })
    }

    /// The temporary directory the index is being written in: what is created there (the BM25
    /// index) is published with the index by `finish`, or removed with it on failure.
    pub fn temp_dir(&self) -> &Path {
        self.writer.temp_dir()
    }

    /// Number of documents added so far.
    pub fn n_docs(&self) -> usize {
        self.doc_offsets.len() - 1
    }

    /// Adds one document: its external id and its token embeddings (row-major `[n × dim]`).
    pub fn add(&mut self, id: &str, tokens: &[f32]) -> Result<()> {
        check_doc(id, tokens, self.dim, self.n_docs(), &mut self.seen_ids)?;
        self.scratch.clear();
        self.scratch.extend(tokens.iter().map(|&v| f16::from_f32(v)));
        self.embeddings
            .write_all(as_bytes(&self.scratch))
            .map_err(|e| EngineError::Io { path: self.embeddings.path().to_path_buf(), source: e })?;
        let last = *self.doc_offsets.last().expect("non-empty");
        self.doc_offsets.push(last + (tokens.len() / self.dim) as u64);
        self.ids.extend_from_slice(id.as_bytes());
        self.id_offsets.push(self.ids.len() as u64);
        Ok(())
    }

    /// Writes the remaining files and publishes the index; returns its metadata.
    pub fn finish(self) -> Result<IndexMeta> {
        if self.n_docs() == 0 {
            return Err(EngineError::InvalidArgument("no documents to index".into()));
        }
        let n_docs = self.n_docs() as u64;
        let Self { writer, embeddings, dim, doc_offsets, ids, id_offsets, options, .. } = self;
        embeddings.finish()?;
        writer.write_component(Component::DocOffsets, as_bytes(&doc_offsets))?;
        writer.write_component(Component::DocIdOffsets, as_bytes(&id_offsets))?;
        writer.write_component(Component::DocIdBytes, &ids)?;
        write_id_table(&writer, &ids, &id_offsets)?;
        let meta = IndexMeta {
            format_version: FORMAT_VERSION,
            kind: IndexKind::Uncompressed,
            dim,
            n_docs,
            n_tokens: *doc_offsets.last().expect("non-empty"),
            created_by: format!("colbert-index {}", env!("CARGO_PKG_VERSION")),
            residual: None,
            encoder: options.encoder,
            build: options.build_params,
        };
        writer.commit(&meta)?;
        Ok(meta)
    }
}

/// Writes `doc_ids.hash`, the id lookup table of the documents whose ids are `ids` split at
/// `id_offsets` (see [`index_format::idhash`]).
pub(crate) fn write_id_table(writer: &IndexWriter, ids: &[u8], id_offsets: &[u64]) -> Result<()> {
    let n_docs = id_offsets.len() - 1;
    let slots =
        index_format::idhash::build(n_docs, |d| &ids[id_offsets[d] as usize..id_offsets[d + 1] as usize])
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!("{n_docs} documents are more than one index holds"))
            })?;
    writer.write_component(Component::DocIdHash, as_bytes(&slots))?;
    Ok(())
}

/// Checks one document before it is added: tokens present and of the index dimension, id
/// valid and new (it is then recorded in `seen`).
pub(crate) fn check_doc(
    id: &str,
    tokens: &[f32],
    dim: usize,
    n_docs: usize,
    seen: &mut HashSet<String>,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(EngineError::InvalidArgument(format!("document `{id}` has no tokens")));
    }
    if !tokens.len().is_multiple_of(dim) {
        return Err(EngineError::DimMismatch {
            what: format!("document `{id}`"),
            expected: dim,
            got: tokens.len(),
        });
    }
    check_values(id, tokens, dim)?;
    if let Some(problem) = crate::corpus::id_problem(id) {
        return Err(EngineError::InvalidArgument(format!("document {n_docs}: {problem}")));
    }
    if seen.contains(id) {
        return Err(EngineError::InvalidArgument(format!("duplicate document id `{id}`")));
    }
    seen.insert(id.to_owned());
    Ok(())
}

/// Checks that every value of document `id`'s tokens (row-major, `dim` per token) is finite and
/// stays finite in f16, the precision an index stores (its embeddings and centroids): NaN from a
/// broken model, or a value beyond ±65504 that f16 would turn into an infinity, is refused here
/// rather than written.
///
/// # Errors
/// [`EngineError::NonFinite`] for NaN or an infinity, [`EngineError::InvalidArgument`] for a
/// finite value that overflows f16; both name the document, token row and dimension.
pub fn check_values(id: &str, tokens: &[f32], dim: usize) -> Result<()> {
    check_values_of(tokens, dim, || format!("document `{id}`"))
}

/// [`check_values`] for the values of `what` (called only on error).
pub(crate) fn check_values_of(tokens: &[f32], dim: usize, what: impl Fn() -> String) -> Result<()> {
    let Some(i) = tokens.iter().position(|&v| !f16::from_f32(v).is_finite()) else { return Ok(()) };
    let (row, col) = (i.checked_div(dim).unwrap_or(0), i.checked_rem(dim).unwrap_or(i));
    let v = tokens[i];
    Err(if v.is_finite() {
        EngineError::InvalidArgument(format!(
            "{}: value {v:e} at row {row}, column {col} is beyond the range of f16 (±65504), the \
             precision the index stores",
            what()
        ))
    } else {
        EngineError::NonFinite { what: what(), row, col }
    })
}

/// Reads external document ids, one per line (surrounding whitespace trimmed), and checks that
/// there are `expected` of them, none empty, none repeated, and none holding whitespace or a
/// control character (see [`crate::corpus::id_problem`]).
pub fn read_doc_ids(path: &Path, expected: usize) -> Result<Vec<String>> {
    let bad = |problem: String| EngineError::BadInput { path: PathBuf::from(path), problem };
    let raw = std::fs::read(path).map_err(|e| EngineError::Io { path: path.to_path_buf(), source: e })?;
    let text = String::from_utf8(raw).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count();
        bad(format!("line {line}: invalid UTF-8"))
    })?;
    let ids: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    if ids.len() != expected {
        return Err(bad(format!("{} ids for {expected} documents", ids.len())));
    }
    let mut seen = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() {
            return Err(bad(format!("line {}: empty document id", i + 1)));
        }
        if let Some(problem) = crate::corpus::id_problem(id) {
            return Err(bad(format!("line {}: {problem}", i + 1)));
        }
        if !seen.insert(id.as_str()) {
            return Err(bad(format!("line {}: duplicate document id `{id}`", i + 1)));
        }
    }
    Ok(ids)
}
