//! SMART-format records: `.I <id>` starts a record, and field markers (`.T`, `.A`, `.B`,
//! `.W`, `.X`, ...) stand alone on their own lines.

use std::path::Path;

use super::{squash, Document, Query};
use crate::error::{EngineError, Result};

/// One record: its `.I` label and its fields in order (a repeated marker adds a field).
pub(super) struct Record {
    pub(super) id: String,
    fields: Vec<(char, String)>,
}

impl Record {
    /// All text of the fields with this marker, joined and squashed.
    fn field(&self, marker: char) -> String {
        let parts: Vec<&str> =
            self.fields.iter().filter(|(m, _)| *m == marker).map(|(_, t)| t.as_str()).collect();
        squash(&parts.join(" "))
    }
}

/// Reads a file as Latin-1: every byte is the code point of the same value.
pub(super) fn read_latin1(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    Ok(bytes.iter().map(|&b| char::from(b)).collect())
}

/// Splits SMART text into records.
pub(super) fn parse(text: &str, path: &Path) -> Result<Vec<Record>> {
    let mut records: Vec<Record> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |problem: String| EngineError::BadInput {
            path: path.to_path_buf(),
            problem: format!("line {}: {problem}", index + 1),
        };
        let trimmed = line.trim_end();
        if let Some(label) = trimmed.strip_prefix(".I ") {
            let id = label.trim();
            if id.is_empty() || id.contains(char::is_whitespace) {
                return Err(bad(format!("bad record label `{id}`")));
            }
            records.push(Record { id: id.to_string(), fields: Vec::new() });
            continue;
        }
        let Some(record) = records.last_mut() else {
            if trimmed.is_empty() {
                continue;
            }
            return Err(bad("text before the first `.I` record".to_string()));
        };
        let mut chars = trimmed.chars();
        if let (Some('.'), Some(marker), None) = (chars.next(), chars.next(), chars.next()) {
            if marker.is_ascii_uppercase() {
                record.fields.push((marker, String::new()));
                continue;
            }
        }
        match record.fields.last_mut() {
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None if trimmed.is_empty() => {}
            None => return Err(bad(format!("text outside any field of record `{}`", record.id))),
        }
    }
    Ok(records)
}

/// Reads documents: id from `.I`, title from `.T`, text from `.W`. Ids must be unique.
pub(super) fn read_documents(path: &Path) -> Result<Vec<Document>> {
    let records = parse(&read_latin1(path)?, path)?;
    let mut seen = std::collections::HashSet::new();
    let mut documents = Vec::with_capacity(records.len());
    for r in records {
        if !seen.insert(r.id.clone()) {
            return Err(EngineError::BadInput {
                path: path.to_path_buf(),
                problem: format!("document `{}` appears twice", r.id),
            });
        }
        documents.push(Document { title: r.field('T'), text: r.field('W'), id: r.id });
    }
    Ok(documents)
}

/// Reads queries: id from `.I`, text from `.T` (if any) then `.W`.
pub(super) fn read_queries(path: &Path) -> Result<Vec<Query>> {
    let records = parse(&read_latin1(path)?, path)?;
    Ok(records
        .into_iter()
        .map(|r| Query { text: squash(&format!("{} {}", r.field('T'), r.field('W'))), id: r.id })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_with_odd_markers() {
        let text = ".I 1\r\n.T \r\nA  title\r\n.A\r\nsomeone\r\n.W\r\nbody one\r\n.W\r\nbody two\r\n.I 2\n.T\n.W\n.X\n1\t2\t3\n";
        let records = parse(text, Path::new("x")).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "1");
        assert_eq!(records[0].field('T'), "A title");
        assert_eq!(records[0].field('W'), "body one body two");
        assert_eq!(records[1].field('W'), "");
    }

    #[test]
    fn reports_stray_text() {
        let err = parse("junk\n.I 1\n", Path::new("x")).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = parse(".I 1\nno field\n", Path::new("x")).err().unwrap().to_string();
        assert!(err.contains("line 2") && err.contains("outside any field"), "{err}");
    }
}
