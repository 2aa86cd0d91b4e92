//! Ranked results (runs) in TREC format.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use super::qrels::{read_text, write_file};
use crate::error::{EngineError, Result};

/// One retrieved document and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEntry {
    /// The document id.
    pub doc_id: String,
    /// The retrieval score; higher ranks first.
    pub score: f64,
}

/// Retrieved documents for each query.
///
/// Entries are kept in insertion order; [`Run::ranking`] gives them in trec_eval's order
/// (score descending, then document id descending).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    queries: BTreeMap<String, Vec<RunEntry>>,
}

impl Run {
    /// An empty run.
    pub fn new() -> Run {
        Run::default()
    }

    /// Reads a TREC run file.
    pub fn from_path(path: &Path) -> Result<Run> {
        Run::parse(&read_text(path)?, path)
    }

    /// Parses TREC run text: `qid Q0 docid rank score tag` per line, whitespace separated.
    ///
    /// The second, fourth and sixth columns are not interpreted. Scores must be numbers
    /// other than NaN, and a document may appear once per query. `path` names the source in
    /// error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Run> {
        let mut run = Run::new();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let bad = |problem: String| EngineError::BadInput {
                path: path.to_path_buf(),
                problem: format!("line {}: {problem}", index + 1),
            };
            if fields.len() != 6 {
                return Err(bad(format!(
                    "expected 6 fields `qid Q0 docid rank score tag`, found {}",
                    fields.len()
                )));
            }
            let (qid, docid, score) = (fields[0], fields[2], fields[4]);
            let score: f64 = match score.parse() {
                Ok(s) if !f64::is_nan(s) => s,
                _ => return Err(bad(format!("score `{score}` is not a number"))),
            };
            if !seen.insert((qid, docid)) {
                return Err(bad(format!("query `{qid}` retrieves document `{docid}` twice")));
            }
            run.push(qid, docid, score);
        }
        Ok(run)
    }

    /// Appends a retrieved document to a query's results. Scores need not be sorted;
    /// [`evaluate`](super::evaluate) rejects a document retrieved twice for one query.
    pub fn push(&mut self, query_id: &str, doc_id: &str, score: f64) {
        let entry = RunEntry { doc_id: doc_id.to_string(), score };
        self.queries.entry(query_id.to_string()).or_default().push(entry);
    }

    /// The entries of one query in insertion order.
    pub fn entries(&self, query_id: &str) -> Option<&[RunEntry]> {
        self.queries.get(query_id).map(Vec::as_slice)
    }

    /// The entries of one query in trec_eval's rank order: score descending, ties broken by
    /// document id descending (byte-wise). Returns an empty list for an unknown query.
    pub fn ranking(&self, query_id: &str) -> Vec<&RunEntry> {
        let mut ranked: Vec<&RunEntry> =
            self.queries.get(query_id).map(|v| v.iter().collect()).unwrap_or_default();
        ranked.sort_by(|a, b| trec_order(a, b));
        ranked
    }

    /// Every query id in the run, in order.
    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    /// The number of queries with results.
    pub fn num_queries(&self) -> usize {
        self.queries.len()
    }

    /// Whether the run has no results.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Renders the run in TREC format, ranked as [`Run::ranking`], with ranks from 1 and the
    /// given tag (which must not contain whitespace to read back).
    pub fn to_text(&self, tag: &str) -> String {
        let mut out = String::new();
        for qid in self.queries.keys() {
            for (rank, entry) in self.ranking(qid).into_iter().enumerate() {
                // Writing to a String cannot fail.
                let _ = writeln!(out, "{qid} Q0 {} {} {} {tag}", entry.doc_id, rank + 1, entry.score);
            }
        }
        out
    }

    /// Writes the run to a file in TREC format; see [`Run::to_text`].
    pub fn write(&self, path: &Path, tag: &str) -> Result<()> {
        write_file(path, self.to_text(tag).as_bytes())
    }
}

/// trec_eval's result order: score descending, then document id descending.
///
/// A total order, so that sorting never panics: -0.0 equals 0.0 as in C, and a NaN (which
/// only [`Run::push`] lets in) ranks at one end of the list, by its sign bit.
fn trec_order(a: &RunEntry, b: &RunEntry) -> Ordering {
    let key = |s: f64| if s == 0.0 { 0.0 } else { s };
    key(b.score).total_cmp(&key(a.score)).then_with(|| b.doc_id.as_bytes().cmp(a.doc_id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("run.txt")
    }

    #[test]
    fn ranks_by_score_then_doc_id_descending() {
        let run = Run::parse("q 0 10 1 1.0 t\nq 0 9 2 1.0 t\nq 0 a 3 2 t\nq 0 b 4 -1e3 t\n", p()).unwrap();
        let ids: Vec<&str> = run.ranking("q").iter().map(|e| e.doc_id.as_str()).collect();
        assert_eq!(ids, ["a", "9", "10", "b"]);
        assert!(run.ranking("missing").is_empty());
    }

    #[test]
    fn round_trips() {
        let mut run = Run::new();
        run.push("2", "x", 0.25);
        run.push("1", "y", 3.0);
        run.push("1", "z", 4.5);
        let back = Run::parse(&run.to_text("tag"), p()).unwrap();
        assert_eq!(back.ranking("1"), run.ranking("1"));
        assert_eq!(back.ranking("2"), run.ranking("2"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = Run::parse("q Q0 d 1 1 t\nq Q0 e 2 NaN t\n", p()).unwrap_err().to_string();
        assert!(err.contains("run.txt") && err.contains("line 2") && err.contains("NaN"), "{err}");
        let err = Run::parse("q Q0 d 1 1\n", p()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("found 5"), "{err}");
        let err = Run::parse("q Q0 d 1 1 t\n\nq Q0 d 2 0 t\n", p()).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("twice"), "{err}");
    }
}
