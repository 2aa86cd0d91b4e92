//! The BM25 first stage: a tantivy index stored next to the ColBERT index (`INDEX/bm25/`).
//!
//! Documents are indexed as one text field (title and body joined, the same text the ColBERT
//! encoder sees) with tantivy's English analyser: split on non-alphanumerics, lowercase, drop
//! tokens over 40 bytes, Porter/Snowball stemming. Scoring is tantivy's BM25 (k1 = 1.2,
//! b = 0.75) over the whole collection. A query is tokenised by the same analyser and searched as
//! a disjunction of its terms (no query syntax, so no text can fail to parse). The text is
//! stored too, so the index also serves document texts to rerankers ([`DocTexts`]).
//!
//! **Integrity.** tantivy trusts its files: damaged ones can make it panic, or abort the process
//! allocating a size read from them. So the builder records the length and CRC32 of every file
//! it wrote (`bm25/checksums.crc32`, see [`index_format::checksums`]), and opening recomputes
//! them all before tantivy reads anything ([`verify_in`] does the same): a damaged file is an
//! error naming it. (An index built before the list existed is checked against tantivy's own
//! segment checksums instead.) Every call into tantivy also runs under
//! [`std::panic::catch_unwind`], so files that pass the checks but still make tantivy panic
//! give an error naming `bm25/` (see [`catching_panics`] for keeping the panic off stderr).
//! Only a directory forged with matching checksums can still reach tantivy's allocation aborts.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use index_format::{checksums, FormatError};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

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

/// A tantivy error as one line (some of its messages span several).
fn tantivy_error(path: &Path, what: &str, e: tantivy::TantivyError) -> EngineError {
    let message = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    EngineError::BadInput { path: path.to_path_buf(), problem: format!("{what}: {message}") }
}

/// tantivy's lock files, which come and go with writers and readers: not part of the index.
fn is_lock_file(name: &str) -> bool {
    name.starts_with(".tantivy-") && name.ends_with(".lock")
}

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside a call into tantivy whose panics this module catches
/// and turns into errors. The process's panic hook still runs first (and by default prints the
/// panic): a program that reports the error itself can install a hook that stays silent while
/// this is true, as the `colbert-index` binary does.
pub fn catching_panics() -> bool {
    CATCHING.with(Cell::get)
}

/// Runs `f`, which calls into tantivy on the BM25 index in `dir`, turning a panic into an error
/// naming `dir`.
///
/// `AssertUnwindSafe`: after a panic the tantivy objects `f` touched may be inconsistent; the
/// caller only gets the error, and any later call on them runs under this guard again.
fn guarded<T>(dir: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outer = CATCHING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let mut message: String = message.lines().next().unwrap_or("").chars().take(200).collect();
        message = message.escape_debug().to_string();
        Err(FormatError::corrupt(
            dir,
            format!("the BM25 index failed while reading it (tantivy: {message}): its files are damaged"),
        )
        .into())
    })
}

/// What [`verify_in`] checked of an index's BM25 sub-index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bm25Check {
    /// The index has no `bm25/`.
    Absent,
    /// Every file against the checksum list recorded at build time.
    Checksums {
        /// Files checked.
        files: usize,
        /// Bytes read.
        bytes: u64,
    },
    /// Built before checksum lists were recorded: tantivy's own footer checksums of its segment
    /// files were checked (its `meta.json` has none).
    TantivyFooters,
}

/// Checks the BM25 sub-index of the index directory `index_dir`, if it has one: every file
/// against its recorded length and CRC32 or, for one built without a checksum list, tantivy's
/// own checksums.
///
/// # Errors
/// The first damaged file, named.
pub fn verify_in(index_dir: &Path) -> Result<Bm25Check> {
    let dir = index_dir.join(BM25_DIR);
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Bm25Check::Absent),
        Err(e) => Err(EngineError::Io { path: dir, source: e }),
        Ok(_) => check_files(&dir),
    }
}

/// Checks every file of the BM25 index directory `dir` (see [`verify_in`]).
fn check_files(dir: &Path) -> Result<Bm25Check> {
    if !dir.is_dir() {
        return Err(FormatError::corrupt(dir, "not a directory").into());
    }
    if let Some(list) = checksums::read(dir)? {
        let bytes = checksums::verify(dir, &list)?;
        return Ok(Bm25Check::Checksums { files: list.len(), bytes });
    }
    let damaged = guarded(dir, || {
        let index =
            Index::open_in_dir(dir).map_err(|e| tantivy_error(dir, "cannot open the BM25 index", e))?;
        index.validate_checksum().map_err(|e| tantivy_error(dir, "cannot check the BM25 index", e))
    })?;
    match damaged.into_iter().min() {
        Some(file) => Err(FormatError::corrupt(dir.join(file), "tantivy's checksum does not match").into()),
        None => Ok(Bm25Check::TantivyFooters),
    }
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

    /// Commits, waits for background merges and records the checksum of every file
    /// (`checksums.crc32`); returns the number of documents.
    pub fn finish(mut self) -> Result<usize> {
        self.writer.commit().map_err(|e| tantivy_error(&self.dir, "cannot commit the BM25 index", e))?;
        self.writer
            .wait_merging_threads()
            .map_err(|e| tantivy_error(&self.dir, "cannot finish merging the BM25 index", e))?;
        checksums::record(&self.dir, is_lock_file)?;
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

    /// Opens a BM25 index directory: checks every file (as [`verify_in`]: the whole directory
    /// is read once), then opens it with tantivy (see the module's notes on integrity).
    pub fn open(dir: &Path) -> Result<Self> {
        check_files(dir)?;
        guarded(dir, || {
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
            // No reload on commit: the index is never written once published, and a watcher
            // would run tantivy on a thread of its own, outside the guard.
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .map_err(|e| tantivy_error(dir, "cannot read the BM25 index", e))?;
            Ok(Bm25Index { dir: dir.to_path_buf(), index, reader, id, text })
        })
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        // (Summed from the segments' metadata, read at open: no file access.)
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
        guarded(&self.dir, || self.search_unguarded(query, k))
    }

    fn search_unguarded(&self, query: &str, k: usize) -> Result<Vec<Scored>> {
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
        guarded(&self.dir, || self.text_unguarded(id))
    }

    fn text_unguarded(&self, id: &str) -> Result<Option<String>> {
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
    fn the_build_records_checksums_that_open_and_verify_check() {
        let dir = tempfile::tempdir().unwrap();
        drop(build(dir.path(), DOCS));
        let bm25 = dir.path().join(BM25_DIR);
        let Bm25Check::Checksums { files, bytes } = verify_in(dir.path()).unwrap() else {
            panic!("no checksum list recorded")
        };
        assert!(files >= 5 && bytes > 0, "{files} files, {bytes} bytes");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(verify_in(empty.path()).unwrap(), Bm25Check::Absent);
        // The largest file (the stored texts), one byte flipped: both name it.
        let largest = std::fs::read_dir(&bm25)
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(&largest).unwrap();
        bytes[7] ^= 1;
        std::fs::write(&largest, bytes).unwrap();
        let name = largest.file_name().unwrap().to_str().unwrap();
        for err in [verify_in(dir.path()).unwrap_err(), Bm25Index::open_in(dir.path()).unwrap_err()] {
            let err = err.to_string();
            assert!(err.contains(name) && err.contains("checksum mismatch"), "{err}");
        }
    }

    #[test]
    fn a_panic_inside_tantivy_is_an_error_naming_the_directory() {
        let dir = Path::new("/somewhere/bm25");
        assert!(!catching_panics());
        let err = guarded(dir, || -> Result<()> {
            assert!(catching_panics());
            panic!("range end index 9 out of range\nfor slice of length 4")
        })
        .unwrap_err();
        assert!(!catching_panics());
        let err = err.to_string();
        assert!(err.starts_with("/somewhere/bm25: corrupt index: the BM25 index failed"), "{err}");
        assert!(err.contains("range end index 9 out of range") && !err.contains('\n'), "{err}");
        assert_eq!(guarded(dir, || Ok(3)).unwrap(), 3);
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
