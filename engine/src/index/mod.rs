//! Building and opening indexes.

mod build;

pub use build::{read_doc_ids, BuildOptions, IndexBuilder};

use std::path::Path;

use index_format::{IndexMeta, IndexReader};

use crate::error::{EngineError, Result};
use crate::search::{exhaustive, Hit, SearchResults};

/// An open index: memory-mapped files plus the searchers over them.
#[derive(Debug)]
pub struct Index {
    reader: IndexReader,
}

impl Index {
    /// Opens the index in `dir` (cheap checks only; see [`Index::verify`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self { reader: IndexReader::open(dir)? })
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

    fn check_query(&self, query: &[f32]) -> Result<()> {
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
        if query.iter().any(|v| !v.is_finite()) {
            return Err(EngineError::InvalidArgument("the query holds NaN or infinite values".into()));
        }
        Ok(())
    }

    /// Exact MaxSim top-`k` of each query (row-major `[len × dim]` f32) over every document:
    /// the oracle that faster modes are checked against.
    pub fn search_exhaustive(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_query(q)?;
        }
        Ok(exhaustive::search(&self.reader, queries, k))
    }

    /// Attaches external ids to hits.
    pub fn resolve(&self, hits: &[Hit]) -> SearchResults {
        hits.iter().map(|h| (self.doc_id(h.doc).into_owned(), h.score)).collect()
    }
}
