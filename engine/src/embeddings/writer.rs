//! Writing embeddings files in the layout [`super::DocEmbeddingsFile`] and
//! [`super::QueryEmbeddings`] read, streaming: the safetensors header is written first (its
//! shapes are known from the document lengths), then the token rows in as many pieces as the
//! caller likes, so a file larger than memory can be produced.
//!
//! Files are written to a temporary name beside the destination and renamed into place by
//! `finish`, so a failed or interrupted write never leaves a truncated file under the real name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;

use crate::error::{EngineError, Result};

fn io(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io { path: path.to_path_buf(), source }
}

/// One tensor's header entry.
struct Entry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<u64>,
    bytes: u64,
}

/// The safetensors header for `entries` stored back to back in order: the 8-byte length
/// followed by JSON padded with spaces to a multiple of 8 bytes.
fn header(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    let mut offset = 0u64;
    for e in entries {
        map.insert(
            e.name.to_string(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes]}),
        );
        offset += e.bytes;
    }
    let mut json = serde_json::Value::Object(map).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out
}

/// A file being written under a temporary name.
struct TempFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
}

impl TempFile {
    fn create(dest: &Path) -> Result<Self> {
        index_format::remove_stale_siblings(dest);
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        Ok(Self { dest: dest.to_path_buf(), tmp, out: BufWriter::with_capacity(1 << 20, file) })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let tmp = &self.tmp;
        self.out.write_all(bytes).map_err(|e| io(tmp, e))
    }

    fn commit(mut self) -> Result<()> {
        self.out.flush().map_err(|e| io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io(&self.dest, e))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Converts f32 values to little-endian f16 bytes, appending to `out`.
fn push_f16(values: &[f32], out: &mut Vec<u8>) {
    out.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()));
}

/// Streams a document embeddings file: `doclens` (i64) and `embeddings` (f16).
pub struct DocEmbeddingsWriter {
    file: TempFile,
    dim: usize,
    expected: u64,
    written: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DocEmbeddingsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocEmbeddingsWriter")
            .field("dest", &self.file.dest)
            .field("dim", &self.dim)
            .field("expected", &self.expected)
            .field("written", &self.written)
            .finish()
    }
}

impl DocEmbeddingsWriter {
    /// Starts `path` for documents of `doclens` tokens of dimension `dim`, writing the header
    /// and the lengths at once.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] for no documents, a zero length or dimension;
    /// [`EngineError::Io`] naming the file if it cannot be created.
    pub fn create(path: &Path, dim: usize, doclens: &[u32]) -> Result<Self> {
        if doclens.is_empty() || dim == 0 || doclens.contains(&0) {
            return Err(EngineError::InvalidArgument(
                "an embeddings file needs documents, each with at least one token, and a positive dimension"
                    .into(),
            ));
        }
        let tokens = doclens.iter().try_fold(0u64, |sum, &l| sum.checked_add(l as u64));
        let bytes = tokens.and_then(|t| t.checked_mul(dim as u64)).and_then(|v| v.checked_mul(2));
        let (Some(tokens), Some(bytes)) = (tokens, bytes) else {
            return Err(EngineError::InvalidArgument(format!(
                "{} documents of dimension {dim} overflow 64 bits of f16 bytes",
                doclens.len()
            )));
        };
        let head = header(&[
            Entry {
                name: "doclens",
                dtype: "I64",
                shape: vec![doclens.len() as u64],
                bytes: 8 * doclens.len() as u64,
            },
            Entry { name: "embeddings", dtype: "F16", shape: vec![tokens, dim as u64], bytes },
        ]);
        let mut file = TempFile::create(path)?;
        file.write(&head)?;
        let lens: Vec<u8> = doclens.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
        file.write(&lens)?;
        Ok(Self { file, dim, expected: tokens, written: 0, buf: Vec::new() })
    }

    /// Appends token rows (row-major f32, a whole number of rows), stored as f16.
    ///
    /// # Errors
    /// If the rows are ragged, would exceed the announced token count, or the write fails.
    pub fn write_tokens(&mut self, rows: &[f32]) -> Result<()> {
        if !rows.len().is_multiple_of(self.dim) {
            return Err(EngineError::InvalidArgument(format!(
                "{} values is not a whole number of {}-dimensional rows",
                rows.len(),
                self.dim
            )));
        }
        let n = (rows.len() / self.dim) as u64;
        if self.written + n > self.expected {
            return Err(EngineError::InvalidArgument(format!(
                "more token rows than the {} the document lengths announce",
                self.expected
            )));
        }
        self.buf.clear();
        push_f16(rows, &mut self.buf);
        self.file.write(&self.buf)?;
        self.written += n;
        Ok(())
    }

    /// Token rows written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that every announced row was written and moves the file into place.
    ///
    /// # Errors
    /// If rows are missing, or flushing or renaming fails.
    pub fn finish(self) -> Result<()> {
        if self.written != self.expected {
            return Err(EngineError::InvalidArgument(format!(
                "{} token rows written, the document lengths announce {}",
                self.written, self.expected
            )));
        }
        self.file.commit()
    }
}

/// Writes a query embeddings file: `queries` (f16, `[n_queries, query_len, dim]`) from
/// row-major f32 `tokens`.
///
/// # Errors
/// If the shape does not match `tokens`, or the write fails.
pub fn write_query_embeddings(path: &Path, query_len: usize, dim: usize, tokens: &[f32]) -> Result<()> {
    if query_len == 0 || dim == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(query_len * dim) {
        return Err(EngineError::InvalidArgument(format!(
            "{} values do not form queries of {query_len} tokens of dimension {dim}",
            tokens.len()
        )));
    }
    let n = (tokens.len() / (query_len * dim)) as u64;
    let head = header(&[Entry {
        name: "queries",
        dtype: "F16",
        shape: vec![n, query_len as u64, dim as u64],
        bytes: 2 * tokens.len() as u64,
    }]);
    let mut file = TempFile::create(path)?;
    file.write(&head)?;
    let mut buf = Vec::with_capacity(tokens.len() * 2);
    push_f16(tokens, &mut buf);
    file.write(&buf)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::super::{DocEmbeddingsFile, QueryEmbeddings};
    use super::*;

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.safetensors");
        let doclens = [2u32, 1, 3];
        let rows: Vec<f32> = (0..6 * 8).map(|i| i as f32 / 64.0).collect();
        let mut w = DocEmbeddingsWriter::create(&path, 8, &doclens).unwrap();
        w.write_tokens(&rows[..16]).unwrap();
        w.write_tokens(&rows[16..]).unwrap();
        w.finish().unwrap();
        let f = DocEmbeddingsFile::open(&path).unwrap();
        assert_eq!(f.doclens(), &[2, 1, 3]);
        let mut back = Vec::new();
        f.rows_f32(0..6, &mut back).unwrap();
        assert_eq!(back, rows); // multiples of 1/64 below 1 are exact in f16
        let qpath = dir.path().join("q.safetensors");
        write_query_embeddings(&qpath, 3, 8, &rows[..48]).unwrap();
        let q = QueryEmbeddings::open(&qpath).unwrap();
        assert_eq!((q.queries.len(), q.query_len, q.dim), (2, 3, 8));
        assert_eq!(q.queries.concat(), rows);
        // Only the two files: no temporaries left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn short_or_long_writes_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.safetensors");
        let mut w = DocEmbeddingsWriter::create(&path, 8, &[2]).unwrap();
        assert!(w.write_tokens(&[0.0; 7]).is_err());
        assert!(w.write_tokens(&[0.0; 24]).is_err());
        w.write_tokens(&[0.0; 8]).unwrap();
        assert!(w.finish().is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(DocEmbeddingsWriter::create(&path, 8, &[]).is_err());
        assert!(DocEmbeddingsWriter::create(&path, 8, &[1, 0]).is_err());
        assert!(write_query_embeddings(&path, 3, 8, &[0.0; 20]).is_err());
    }
}
