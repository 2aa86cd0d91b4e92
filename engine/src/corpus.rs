//! Reading collections and query sets: ColBERT TSV (`id<TAB>text`) and BEIR JSONL
//! (`{"_id", "title", "text"}` for documents, `{"_id", "text"}` for queries).
//!
//! Readers stream records with their line numbers, so memory does not grow with the collection.
//! Every malformed line is an error naming the file and the line. Documents whose text is empty
//! are skipped and counted (see [`CorpusReader::skipped_empty`]): they have no tokens to index.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// The file format of a collection or query set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusFormat {
    /// `id<TAB>text` (a third `title` column, as some ColBERT TSVs have, is prepended to the text).
    Tsv,
    /// One JSON object per line with `_id`, optional `title`, and `text`.
    Jsonl,
}

impl CorpusFormat {
    /// Chooses the format from the file extension (`.jsonl`/`.json` → JSONL, else TSV).
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json") => CorpusFormat::Jsonl,
            _ => CorpusFormat::Tsv,
        }
    }
}

/// One document or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// External id.
    pub id: String,
    /// Title, when the collection has one (empty otherwise).
    pub title: String,
    /// Body text.
    pub text: String,
    /// 1-based line number in the file.
    pub line: usize,
}

impl Record {
    /// Title and text joined as the encoder sees them.
    pub fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{}. {}", self.title, self.text)
        }
    }
}

/// Why `id` cannot be an external id (of a document, a query or a run), or `None` when it can.
/// Ids are single fields of whitespace-separated TREC runs and qrels and are printed to
/// terminals: an id must be non-empty and hold no Unicode whitespace (space, tab, vertical tab,
/// no-break space, line separator, ...) and no control character. The text names the first
/// offending character by its code point.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("the id is empty".into());
    }
    let c = id.chars().find(|c| c.is_whitespace() || c.is_control())?;
    let kind = if c.is_whitespace() { "whitespace" } else { "a control character" };
    Some(format!(
        "id \"{}\" holds {kind} (U+{:04X}): ids may not contain whitespace or control characters",
        id.escape_debug(),
        c as u32
    ))
}

/// A streaming reader of a collection or query file.
#[derive(Debug)]
pub struct CorpusReader {
    path: PathBuf,
    format: CorpusFormat,
    lines: std::io::Split<BufReader<File>>,
    line: usize,
    skipped_empty: usize,
    skip_header: bool,
}

impl CorpusReader {
    /// Opens `path`, detecting the format from its extension.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::Io { path: path.to_path_buf(), source: e })?;
        Ok(Self {
            path: path.to_path_buf(),
            format: CorpusFormat::from_path(path),
            lines: BufReader::with_capacity(1 << 20, file).split(b'\n'),
            line: 0,
            skipped_empty: 0,
            skip_header: true,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records skipped because their text was empty.
    pub fn skipped_empty(&self) -> usize {
        self.skipped_empty
    }

    fn bad(&self, problem: impl std::fmt::Display) -> EngineError {
        EngineError::BadInput { path: self.path.clone(), problem: format!("line {}: {problem}", self.line) }
    }

    fn parse(&mut self, raw: &[u8]) -> Result<Option<Record>> {
        let text = std::str::from_utf8(raw)
            .map_err(|e| self.bad(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            return Ok(None);
        }
        let (id, title, body) = match self.format {
            CorpusFormat::Tsv => {
                let mut cols = text.split('\t');
                let id = cols.next().unwrap_or("").trim().to_owned();
                let Some(body) = cols.next() else {
                    return Err(self.bad("expected `id<TAB>text`, found no tab"));
                };
                let title = cols.next().unwrap_or("").trim().to_owned();
                if self.skip_header && self.line == 1 && matches!(id.as_str(), "id" | "pid" | "qid" | "_id") {
                    return Ok(None);
                }
                (id, title, body.to_owned())
            }
            CorpusFormat::Jsonl => {
                let v: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| self.bad(format!("invalid JSON: {e}")))?;
                let id = match v.get("_id").or_else(|| v.get("id")) {
                    Some(serde_json::Value::String(s)) => s.trim().to_owned(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => return Err(self.bad("missing `_id`")),
                };
                let field = |name: &str| v.get(name).and_then(|t| t.as_str()).unwrap_or("").to_owned();
                (id, field("title"), field("text"))
            }
        };
        if id.is_empty() {
            return Err(self.bad("missing id"));
        }
        if let Some(problem) = id_problem(&id) {
            return Err(self.bad(problem));
        }
        if body.trim().is_empty() && title.trim().is_empty() {
            self.skipped_empty += 1;
            return Ok(None);
        }
        Ok(Some(Record { id, title: title.trim().to_owned(), text: body.trim().to_owned(), line: self.line }))
    }
}

impl Iterator for CorpusReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = match self.lines.next()? {
                Ok(raw) => raw,
                Err(e) => return Some(Err(EngineError::Io { path: self.path.clone(), source: e })),
            };
            self.line += 1;
            match self.parse(&raw) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Reads a whole query file (TSV `qid<TAB>text` or BEIR `queries.jsonl`), rejecting empty
/// queries and duplicate ids.
pub fn read_queries(path: &Path) -> Result<Vec<Record>> {
    let mut reader = CorpusReader::open(path)?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in reader.by_ref() {
        let r = r?;
        if !seen.insert(r.id.clone()) {
            return Err(EngineError::BadInput {
                path: path.to_path_buf(),
                problem: format!("line {}: duplicate query id `{}`", r.line, r.id),
            });
        }
        out.push(r);
    }
    if reader.skipped_empty() > 0 {
        return Err(EngineError::BadInput {
            path: path.to_path_buf(),
            problem: format!("{} queries have empty text", reader.skipped_empty()),
        });
    }
    if out.is_empty() {
        return Err(EngineError::BadInput { path: path.to_path_buf(), problem: "no queries".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, content: &[u8]) -> (Vec<Result<Record>>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let mut r = CorpusReader::open(&p).unwrap();
        let v: Vec<_> = r.by_ref().collect();
        (v, r.skipped_empty())
    }

    #[test]
    fn tsv_and_jsonl() {
        let (v, _) = read("c.tsv", b"id\ttext\n1\thello world\r\n2\tsecond\tTitle\n");
        let v: Vec<Record> = v.into_iter().map(Result::unwrap).collect();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].id.as_str(), v[0].text.as_str(), v[0].line), ("1", "hello world", 2));
        assert_eq!(v[1].full_text(), "Title. second");
        let (v, skipped) = read(
            "c.jsonl",
            b"{\"_id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n\n{\"_id\": 7, \"text\": \"\"}\n",
        );
        assert_eq!(skipped, 1);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].as_ref().unwrap().full_text(), "T. x");
    }

    #[test]
    fn errors_name_the_line() {
        let (v, _) = read("c.tsv", b"1\tok\nno tab here\n");
        assert!(v[1].as_ref().unwrap_err().to_string().contains("line 2"));
        let (v, _) = read("c.tsv", b"1\tok\n2\t\xff\xfe\n");
        assert!(v[1].as_ref().unwrap_err().to_string().contains("line 2: invalid UTF-8"));
        let (v, _) = read("c.jsonl", b"{\"text\": \"no id\"}\n");
        assert!(v[0].as_ref().unwrap_err().to_string().contains("line 1: missing `_id`"));
        let (v, _) = read("c.jsonl", b"{broken\n");
        assert!(v[0].as_ref().unwrap_err().to_string().contains("invalid JSON"));
        let (v, _) = read("c.tsv", b"\tno id\n");
        assert!(v[0].as_ref().unwrap_err().to_string().contains("missing id"));
    }
}
