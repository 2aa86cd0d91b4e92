//! Relevance judgments (qrels) in TREC and BEIR formats.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::error::{EngineError, Result};

/// The two text formats qrels come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrelsFormat {
    /// TREC: `qid iteration docid relevance`, whitespace separated; the iteration column is
    /// ignored.
    Trec,
    /// BEIR: `query-id<TAB>corpus-id<TAB>score` after a header line
    /// `query-id<TAB>corpus-id<TAB>score`. A file without the header is accepted as well.
    Beir,
}

impl QrelsFormat {
    /// Guesses the format from the first non-blank line: four fields mean TREC, three mean
    /// BEIR. Returns `None` for an empty text or another field count.
    pub fn detect(text: &str) -> Option<QrelsFormat> {
        let line = text.lines().find(|l| !l.trim().is_empty())?;
        match line.split_whitespace().count() {
            4 => Some(QrelsFormat::Trec),
            3 => Some(QrelsFormat::Beir),
            _ => None,
        }
    }
}

/// Relevance judgments: for each query id, the judged documents and their graded relevance.
///
/// A judgment of 1 or more marks a relevant document; 0 or less a non-relevant one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qrels {
    queries: BTreeMap<String, BTreeMap<String, i32>>,
}

impl Qrels {
    /// An empty set of judgments.
    pub fn new() -> Qrels {
        Qrels::default()
    }

    /// Reads a qrels file, detecting TREC or BEIR format from its first line.
    pub fn from_path(path: &Path) -> Result<Qrels> {
        let text = read_text(path)?;
        let format = QrelsFormat::detect(&text).ok_or_else(|| EngineError::BadInput {
            path: path.to_path_buf(),
            problem: "cannot tell the qrels format: expected 4 fields per line (TREC \
                      `qid 0 docid rel`) or 3 (BEIR `query-id corpus-id score`)"
                .to_string(),
        })?;
        Qrels::parse(&text, format, path)
    }

    /// Parses qrels text in the given format. `path` names the source in error messages.
    pub fn parse(text: &str, format: QrelsFormat, path: &Path) -> Result<Qrels> {
        let mut qrels = Qrels::new();
        let mut seen_data = false;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let bad = |problem: String| EngineError::BadInput {
                path: path.to_path_buf(),
                problem: format!("line {line_no}: {problem}"),
            };
            let (qid, docid, rel) = match format {
                QrelsFormat::Trec => {
                    if fields.len() != 4 {
                        return Err(bad(format!(
                            "expected 4 fields `qid 0 docid relevance`, found {}",
                            fields.len()
                        )));
                    }
                    (fields[0], fields[2], fields[3])
                }
                QrelsFormat::Beir => {
                    if !seen_data && is_beir_header(&fields) {
                        seen_data = true;
                        continue;
                    }
                    if fields.len() != 3 {
                        return Err(bad(format!(
                            "expected 3 fields `query-id corpus-id score`, found {}",
                            fields.len()
                        )));
                    }
                    (fields[0], fields[1], fields[2])
                }
            };
            seen_data = true;
            let rel: i32 = rel.parse().map_err(|_| bad(format!("relevance `{rel}` is not an integer")))?;
            if let Some(previous) = qrels.insert(qid, docid, rel) {
                if previous != rel {
                    return Err(bad(format!(
                        "query `{qid}` judges document `{docid}` twice, as {previous} and {rel}"
                    )));
                }
            }
        }
        Ok(qrels)
    }

    /// Records a judgment, returning the one it replaces, if any.
    pub fn insert(&mut self, query_id: &str, doc_id: &str, relevance: i32) -> Option<i32> {
        self.queries.entry(query_id.to_string()).or_default().insert(doc_id.to_string(), relevance)
    }

    /// The judgments of one query, by document id.
    pub fn query(&self, query_id: &str) -> Option<&BTreeMap<String, i32>> {
        self.queries.get(query_id)
    }

    /// The judgment of one document for one query, if it was judged.
    pub fn relevance(&self, query_id: &str, doc_id: &str) -> Option<i32> {
        self.queries.get(query_id)?.get(doc_id).copied()
    }

    /// Every judged query with its judgments, in query-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeMap<String, i32>)> {
        self.queries.iter().map(|(q, docs)| (q.as_str(), docs))
    }

    /// The number of judged queries.
    pub fn num_queries(&self) -> usize {
        self.queries.len()
    }

    /// The number of judgments over all queries.
    pub fn num_judgments(&self) -> usize {
        self.queries.values().map(BTreeMap::len).sum()
    }

    /// Whether there are no judgments.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Renders the judgments in the given format (with the header line for BEIR), in
    /// query-id then document-id order.
    pub fn to_text(&self, format: QrelsFormat) -> String {
        let mut out = String::new();
        if format == QrelsFormat::Beir {
            out.push_str("query-id\tcorpus-id\tscore\n");
        }
        for (qid, docs) in &self.queries {
            for (docid, rel) in docs {
                // Writing to a String cannot fail.
                let _ = match format {
                    QrelsFormat::Trec => writeln!(out, "{qid} 0 {docid} {rel}"),
                    QrelsFormat::Beir => writeln!(out, "{qid}\t{docid}\t{rel}"),
                };
            }
        }
        out
    }

    /// Writes the judgments to a file in the given format.
    pub fn write(&self, path: &Path, format: QrelsFormat) -> Result<()> {
        write_file(path, self.to_text(format).as_bytes())
    }
}

fn is_beir_header(fields: &[&str]) -> bool {
    fields.len() == 3
        && fields[0].eq_ignore_ascii_case("query-id")
        && fields[1].eq_ignore_ascii_case("corpus-id")
        && fields[2].eq_ignore_ascii_case("score")
}

/// Reads a whole UTF-8 file, naming it in errors.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        EngineError::BadInput { path: path.to_path_buf(), problem: format!("line {line}: not valid UTF-8") }
    })
}

/// Writes a whole file, naming it in errors.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| EngineError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("q.txt")
    }

    #[test]
    fn parses_trec() {
        let q = Qrels::parse("1 0 d1 2\n\n1 0 d2 0\n2 Q0 d1 -1\n", QrelsFormat::Trec, p()).unwrap();
        assert_eq!(q.num_queries(), 2);
        assert_eq!(q.num_judgments(), 3);
        assert_eq!(q.relevance("1", "d1"), Some(2));
        assert_eq!(q.relevance("2", "d1"), Some(-1));
        assert_eq!(q.relevance("2", "d9"), None);
    }

    #[test]
    fn parses_beir_with_and_without_header() {
        let with = Qrels::parse("query-id\tcorpus-id\tscore\nq1\td1\t1\n", QrelsFormat::Beir, p()).unwrap();
        let without = Qrels::parse("q1\td1\t1\n", QrelsFormat::Beir, p()).unwrap();
        assert_eq!(with, without);
        assert_eq!(Qrels::parse(&with.to_text(QrelsFormat::Beir), QrelsFormat::Beir, p()).unwrap(), with);
    }

    #[test]
    fn detects_format() {
        assert_eq!(QrelsFormat::detect("\n1 0 a 1\n"), Some(QrelsFormat::Trec));
        assert_eq!(QrelsFormat::detect("query-id\tcorpus-id\tscore\n"), Some(QrelsFormat::Beir));
        assert_eq!(QrelsFormat::detect("a b\n"), None);
        assert_eq!(QrelsFormat::detect(""), None);
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = Qrels::parse("1 0 a 1\n1 0 b x\n", QrelsFormat::Trec, p()).unwrap_err().to_string();
        assert!(err.contains("q.txt") && err.contains("line 2") && err.contains("`x`"), "{err}");
        let err = Qrels::parse("1 0 a\n", QrelsFormat::Trec, p()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("found 3"), "{err}");
        let err = Qrels::parse("1 0 a 1\n1 0 a 2\n", QrelsFormat::Trec, p()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("twice"), "{err}");
        // The same judgment twice is harmless.
        assert!(Qrels::parse("1 0 a 1\n1 0 a 1\n", QrelsFormat::Trec, p()).is_ok());
        let err = Qrels::parse("qid\tdocid\trel\n", QrelsFormat::Beir, p()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("`rel`"), "{err}");
    }
}
