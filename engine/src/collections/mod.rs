//! Readers for the classic IR test collections (Cranfield, CISI, NPL) and for BEIR-style
//! collections on disk.
//!
//! Each reader produces a [`Collection`]: documents (id, title, text), queries (id, text)
//! and [`Qrels`]. [`Collection::write_beir`] writes one as `corpus.jsonl`, `queries.jsonl`
//! and `qrels.tsv`; [`Collection::read_beir`] reads that back.
//!
//! The classic collections are freely distributed for research by the University of
//! Glasgow IR group. Their source files are SMART records (read as Latin-1) or TREC SGML;
//! the readers squash runs of whitespace (line breaks included) into single spaces.
//!
//! # Relevance mappings
//!
//! - Cranfield codes run from 1 (complete answer) to 4 (minimal interest); 5 and -1 mean not
//!   relevant. The reader maps code `c` in 1..=4 to the graded gain `5 - c` (4, 3, 2, 1)
//!   and keeps -1 and 5 as judged non-relevant (0). Queries are numbered 1..=225 in file
//!   order, as `cranqrel` numbers them, not by their `.I` labels.
//! - CISI and NPL judgments are binary: every listed pair gets 1.

mod beir;
mod smart;
mod trec;

use std::path::Path;

use crate::error::{EngineError, Result};
use crate::eval::Qrels;

/// A document of a collection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Document {
    /// The document id, unique in the collection.
    #[serde(rename = "_id")]
    pub id: String,
    /// The title; empty when the document has none.
    #[serde(default)]
    pub title: String,
    /// The body text.
    #[serde(default)]
    pub text: String,
}

/// A query of a collection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Query {
    /// The query id, as the qrels name it.
    #[serde(rename = "_id")]
    pub id: String,
    /// The query text.
    pub text: String,
}

/// A test collection: documents, queries and relevance judgments.
///
/// Some queries may have no judgments (CISI judges 76 of its 112); evaluation averages over
/// the judged ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collection {
    /// The documents, in source order.
    pub documents: Vec<Document>,
    /// The queries, in source order.
    pub queries: Vec<Query>,
    /// The relevance judgments.
    pub qrels: Qrels,
}

/// The classic collections shipped in the shared data folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassicCollection {
    /// Cranfield: 1,400 aeronautics abstracts, 225 queries, graded judgments.
    Cranfield,
    /// CISI: 1,460 library-science abstracts, 112 queries (76 judged), binary judgments.
    Cisi,
    /// NPL (Vaswani): 11,429 physics and electronics abstracts, 93 queries, binary judgments.
    Npl,
}

impl ClassicCollection {
    /// Every classic collection.
    pub const ALL: [ClassicCollection; 3] =
        [ClassicCollection::Cranfield, ClassicCollection::Cisi, ClassicCollection::Npl];

    /// A short lower-case name, also the folder name used for converted copies.
    pub fn name(self) -> &'static str {
        match self {
            ClassicCollection::Cranfield => "cranfield",
            ClassicCollection::Cisi => "cisi",
            ClassicCollection::Npl => "npl",
        }
    }

    /// The folder holding the collection's source files inside the data folder.
    pub fn folder(self) -> &'static str {
        match self {
            ClassicCollection::Cranfield => "cranfield",
            ClassicCollection::Cisi => "cisi",
            ClassicCollection::Npl => "vaswani_npl",
        }
    }

    /// Reads the collection from `data_dir/<folder>`.
    pub fn load(self, data_dir: &Path) -> Result<Collection> {
        let dir = data_dir.join(self.folder());
        match self {
            ClassicCollection::Cranfield => read_cranfield(&dir),
            ClassicCollection::Cisi => read_cisi(&dir),
            ClassicCollection::Npl => read_npl(&dir),
        }
    }
}

/// Reads Cranfield from a folder holding `cran.all.1400`, `cran.qry` and `cranqrel`.
pub fn read_cranfield(dir: &Path) -> Result<Collection> {
    let documents = smart::read_documents(&dir.join("cran.all.1400"))?;
    // cranqrel numbers the queries 1..=225 in file order; the `.I` labels skip numbers.
    let queries: Vec<Query> = smart::read_queries(&dir.join("cran.qry"))?
        .into_iter()
        .enumerate()
        .map(|(i, q)| Query { id: (i + 1).to_string(), text: q.text })
        .collect();
    let path = dir.join("cranqrel");
    let text = smart::read_latin1(&path)?;
    let mut qrels = Qrels::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = |problem: String| EngineError::BadInput {
            path: path.clone(),
            problem: format!("line {}: {problem}", index + 1),
        };
        let [query, doc, code] = fields[..] else {
            return Err(bad(format!("expected 3 fields `query doc code`, found {}", fields.len())));
        };
        match query.parse::<usize>() {
            Ok(q) if (1..=queries.len()).contains(&q) => {}
            _ => return Err(bad(format!("query `{query}` is not a number in 1..={}", queries.len()))),
        }
        let gain = match code {
            "1" | "2" | "3" | "4" => 5 - code.parse::<i32>().unwrap_or(5),
            "-1" | "5" => 0,
            _ => return Err(bad(format!("relevance code `{code}` is not one of 1..4, 5 or -1"))),
        };
        qrels.insert(query, doc, gain);
    }
    Ok(Collection { documents, queries, qrels })
}

/// Reads CISI from a folder holding `CISI.ALL`, `CISI.QRY` and `CISI.REL`.
pub fn read_cisi(dir: &Path) -> Result<Collection> {
    let documents = smart::read_documents(&dir.join("CISI.ALL"))?;
    let queries = smart::read_queries(&dir.join("CISI.QRY"))?;
    let path = dir.join("CISI.REL");
    let text = smart::read_latin1(&path)?;
    let mut qrels = Qrels::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [] => {}
            [query, doc, _, _] => {
                qrels.insert(query, doc, 1);
            }
            _ => {
                return Err(EngineError::BadInput {
                    path,
                    problem: format!(
                        "line {}: expected 4 fields `query doc 0 0.0`, found {}",
                        index + 1,
                        fields.len()
                    ),
                })
            }
        }
    }
    Ok(Collection { documents, queries, qrels })
}

/// Reads NPL from a folder holding `doc-text.trec`, `query-text.trec` and `qrels`.
pub fn read_npl(dir: &Path) -> Result<Collection> {
    let documents = trec::read_documents(&dir.join("doc-text.trec"))?;
    let queries = trec::read_queries(&dir.join("query-text.trec"))?;
    let qrels = Qrels::from_path(&dir.join("qrels"))?;
    Ok(Collection { documents, queries, qrels })
}

impl Collection {
    /// Writes the collection into `dir` (created if missing) as BEIR files: `corpus.jsonl`
    /// (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and `qrels.tsv`
    /// (`query-id<TAB>corpus-id<TAB>score` after a header line).
    pub fn write_beir(&self, dir: &Path) -> Result<()> {
        beir::write(self, dir)
    }

    /// Reads a collection written by [`Collection::write_beir`], or any BEIR folder with
    /// those three files. Extra JSON fields are ignored; a missing title reads as empty.
    pub fn read_beir(dir: &Path) -> Result<Collection> {
        beir::read(dir)
    }
}

/// Collapses every run of whitespace to one space and trims the ends.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
