//! BEIR-style collection files: `corpus.jsonl`, `queries.jsonl`, `qrels.tsv`.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Collection;
use crate::error::{EngineError, Result};
use crate::eval::qrels::{read_text, write_file};
use crate::eval::{Qrels, QrelsFormat};

/// The corpus file name.
const CORPUS: &str = "corpus.jsonl";
/// The queries file name.
const QUERIES: &str = "queries.jsonl";
/// The qrels file name.
const QRELS: &str = "qrels.tsv";

pub(super) fn write(collection: &Collection, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
    write_jsonl(&dir.join(CORPUS), &collection.documents)?;
    write_jsonl(&dir.join(QUERIES), &collection.queries)?;
    collection.qrels.write(&dir.join(QRELS), QrelsFormat::Beir)
}

pub(super) fn read(dir: &Path) -> Result<Collection> {
    let documents = read_jsonl(&dir.join(CORPUS))?;
    let queries = read_jsonl(&dir.join(QUERIES))?;
    let path = dir.join(QRELS);
    let qrels = Qrels::parse(&read_text(&path)?, QrelsFormat::Beir, &path)?;
    Ok(Collection { documents, queries, qrels })
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(|e| EngineError::BadInput {
            path: path.to_path_buf(),
            problem: format!("cannot encode a record: {e}"),
        })?;
        out.push(b'\n');
    }
    write_file(path, &out)
}

fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = read_text(path)?;
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(line).map_err(|e| EngineError::BadInput {
            path: path.to_path_buf(),
            problem: format!("line {}: {e}", index + 1),
        })?;
        items.push(item);
    }
    Ok(items)
}
