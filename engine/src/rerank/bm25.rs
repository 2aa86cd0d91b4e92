//! The BM25 first stage: a tantivy index stored next to the ColBERT index (`INDEX/bm25/`).
//!
//! Documents are indexed as one text field (title and body joined, the same text the ColBERT
//! encoder sees) with tantivy's English analyser: split on non-alphanumerics, lowercase, drop
//! tokens over 40 bytes, Porter/Snowball stemming. Scoring is tantivy's BM25 (k1 = 1.2,
//! b = 0.75) over the whole collection. A query is tokenised by the same analyser and searched as
//! a disjunction of its terms (no query syntax, so no text can fail to parse). The text is
//! stored too, so the index also serves document texts to rerankers ([`DocTexts`]).

use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term};

use super::{DocTexts, Retriever, Scored};
use crate::error::{EngineError, Result};

/// The directory of the BM25 index inside an index directory.
pub use crate::index::BM25_DIR;

/// Name of tantivy's English analyser (lowercasing and stemming).
const ANALYSER: &str = "en_stem";

/// Memory the single indexing thread may buffer before flushing a segment.
const WRITER_BUDGET: usize = 64 << 20;

const ID_FIELD: &str = "id";
const TEXT_FIELD: &str = "text";

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_text_field(ID_FIELD, STRING | STORED);
    let indexing =
        TextFieldIndexing::default().set_tokenizer(ANALYSER).set_index_option(IndexRecordOption::WithFreqs);
    b.add_text_field(TEXT_FIELD, TextOptions::default().set_indexing_options(indexing).set_stored());
    b.build()
}

fn tantivy_error(path: &Path, what: &str, e: tantivy::TantivyError) -> EngineError {
    EngineError::BadInput { path: path.to_path_buf(), problem: format!("{what}: {e}") }
}

/// Writes a new BM25 index into a directory that must not exist yet (normally inside the
/// temporary directory of an index being built, so that it is published with the rest).
pub struct Bm25Builder {
    dir: PathBuf,
    writer: IndexWriter,
    id: Field,
    text: Field,
    n_docs: usize,
}

impl std::fmt::Debug for Bm25Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Builder").field("dir", &self.dir).field("n_docs", &self.n_docs).finish()
    }
}

impl Bm25Builder {
    /// Creates `dir` and starts an index in it. One indexing thread, so that the same input
    /// gives the same index.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        let schema = schema();
        let index = Index::create_in_dir(dir, schema.clone())
            .map_err(|e| tantivy_error(dir, "cannot create the BM25 index", e))?;
        let writer = index
            .writer_with_num_threads(1, WRITER_BUDGET)
            .map_err(|e| tantivy_error(dir, "cannot start the BM25 writer", e))?;
        let field = |name| schema.get_field(name).expect("field is in the schema");
        Ok(Bm25Builder {
            dir: dir.to_path_buf(),
            writer,
            id: field(ID_FIELD),
            text: field(TEXT_FIELD),
            n_docs: 0,
        })
    }

    /// Adds one document.
    pub fn add(&mut self, id: &str, text: &str) -> Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.id, id);
        doc.add_text(self.text, text);
        self.writer.add_document(doc).map_err(|e| tantivy_error(&self.dir, "cannot add a document", e))?;
        self.n_docs += 1;
        Ok(())
    }

    /// Documents added so far.
    pub fn n_docs(&self) -> usize {
        self.n_docs
    }

    /// Commits and waits for background merges; returns the number of documents.
    pub fn finish(mut self) -> Result<usize> {
        self.writer.commit().map_err(|e| tantivy_error(&self.dir, "cannot commit the BM25 index", e))?;
        self.writer
            .wait_merging_threads()
            .map_err(|e| tantivy_error(&self.dir, "cannot finish merging the BM25 index", e))?;
        Ok(self.n_docs)
    }
}

/// An opened BM25 index.
pub struct Bm25Index {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    id: Field,
    text: Field,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index").field("dir", &self.dir).field("n_docs", &self.n_docs()).finish()
    }
}

impl Bm25Index {
    /// Opens the BM25 index of the index directory `index_dir` (its `bm25/` subdirectory).
    pub fn open_in(index_dir: &Path) -> Result<Self> {
        let dir = index_dir.join(BM25_DIR);
        if !dir.is_dir() {
            return Err(EngineError::BadInput {
                path: dir,
                problem: "no BM25 index: build the index with `colbert-index build --collection FILE --bm25`"
                    .into(),
            });
        }
        Self::open(&dir)
    }

    /// Opens a BM25 index directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let index =
            Index::open_in_dir(dir).map_err(|e| tantivy_error(dir, "cannot open the BM25 index", e))?;
        let schema = index.schema();
        let field = |name: &str| {
            schema.get_field(name).map_err(|_| EngineError::BadInput {
                path: dir.to_path_buf(),
                problem: format!("not a colbert-index BM25 index: no field {name:?}"),
            })
        };
        let (id, text) = (field(ID_FIELD)?, field(TEXT_FIELD)?);
        let reader = index.reader().map_err(|e| tantivy_error(dir, "cannot read the BM25 index", e))?;
        Ok(Bm25Index { dir: dir.to_path_buf(), index, reader, id, text })
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.reader.searcher().num_docs() as usize
    }

    /// The analysed terms of a query, in order (repeats kept: a repeated word weighs more).
    fn query_terms(&self, query: &str) -> Result<Vec<Term>> {
        let mut analyser = self
            .index
            .tokenizer_for_field(self.text)
            .map_err(|e| tantivy_error(&self.dir, "no analyser for the text field", e))?;
        let mut stream = analyser.token_stream(query);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(self.text, &stream.token().text));
        }
        Ok(terms)
    }

    /// The best `k` documents for `query` by BM25, best first; ties by id. A query with no
    /// indexable word returns nothing.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Scored>> {
        let terms = self.query_terms(query)?;
        // More than the corpus asks for all of it (and tantivy sizes its buffers by the limit).
        let k = k.min(self.n_docs());
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new_multiterms_query(terms);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| tantivy_error(&self.dir, "BM25 search failed", e))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument =
                searcher.doc(address).map_err(|e| tantivy_error(&self.dir, "cannot read a document", e))?;
            let id = doc.get_first(self.id).and_then(|v| v.as_str().map(String::from)).ok_or_else(|| {
                EngineError::BadInput { path: self.dir.clone(), problem: "a document has no id".into() }
            })?;
            out.push(Scored { id, score });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The stored text of one document.
    pub fn text(&self, id: &str) -> Result<Option<String>> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_text(self.id, id), IndexRecordOption::Basic);
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(|e| tantivy_error(&self.dir, "id lookup failed", e))?;
        let Some((_, address)) = top.first() else { return Ok(None) };
        let doc: TantivyDocument =
            searcher.doc(*address).map_err(|e| tantivy_error(&self.dir, "cannot read a document", e))?;
        Ok(doc.get_first(self.text).and_then(|v| v.as_str().map(String::from)))
    }
}

impl Retriever for Bm25Index {
    fn name(&self) -> &str {
        "bm25"
    }

    fn retrieve(&self, query: &str, k: usize) -> Result<Vec<Scored>> {
        self.search(query, k)
    }
}

impl DocTexts for Bm25Index {
    fn texts(&self, ids: &[&str]) -> Result<Vec<Option<String>>> {
        ids.iter().map(|id| self.text(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(dir: &Path, docs: &[(&str, &str)]) -> Bm25Index {
        let mut b = Bm25Builder::create(&dir.join(BM25_DIR)).unwrap();
        for (id, text) in docs {
            b.add(id, text).unwrap();
        }
        assert_eq!(b.finish().unwrap(), docs.len());
        Bm25Index::open_in(dir).unwrap()
    }

    const DOCS: &[(&str, &str)] = &[
        ("a", "Boundary layers on flat plates in supersonic flow."),
        ("b", "Heat transfer from a heated cylinder."),
        ("c", "The boundary layer and heat transfer of a flat plate: boundary layers again."),
        ("d", "Stars and planets."),
    ];

    #[test]
    fn ranks_by_bm25_with_stemming() {
        let dir = tempfile::tempdir().unwrap();
        let idx = build(dir.path(), DOCS);
        assert_eq!(idx.n_docs(), 4);
        // "layer" matches "layers" through stemming; c repeats it, so it wins.
        let hits = idx.search("Boundary LAYER", 10).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["c", "a"]);
        assert!(hits[0].score > hits[1].score && hits[1].score > 0.0);
        let hits = idx.search("heat", 1).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, "b", "shorter document wins on equal term frequency");
        assert!(idx.search("galaxies ???", 10).unwrap().is_empty());
        assert!(idx.search("", 10).unwrap().is_empty());
        assert!(idx.search("((title:\"oops", 10).unwrap().is_empty(), "no query syntax");
    }

    #[test]
    fn idf_follows_the_bm25_formula() {
        // Two documents of equal length, one term each: score = idf * (k1 + 1) tf / (tf + k1 (1 - b + b)).
        let dir = tempfile::tempdir().unwrap();
        let idx = build(dir.path(), &[("x", "alpha beta"), ("y", "gamma delta"), ("z", "gamma beta")]);
        let hits = idx.search("alpha", 10).unwrap();
        let idf = (1.0f32 + (3.0 - 1.0 + 0.5) / (1.0 + 0.5)).ln();
        assert_eq!(hits.len(), 1);
        assert!((hits[0].score - idf).abs() < 1e-3, "{} vs {idf}", hits[0].score);
    }

    #[test]
    fn serves_texts_and_reports_missing_index() {
        let dir = tempfile::tempdir().unwrap();
        let idx = build(dir.path(), DOCS);
        let texts = idx.texts(&["d", "nope"]).unwrap();
        assert_eq!(texts, [Some("Stars and planets.".to_string()), None]);
        let empty = tempfile::tempdir().unwrap();
        let err = Bm25Index::open_in(empty.path()).unwrap_err().to_string();
        assert!(err.contains("bm25") && err.contains("--bm25"), "{err}");
        std::fs::create_dir(empty.path().join(BM25_DIR)).unwrap();
        let err = Bm25Index::open_in(empty.path()).unwrap_err().to_string();
        assert!(err.contains("cannot open the BM25 index"), "{err}");
    }
}
