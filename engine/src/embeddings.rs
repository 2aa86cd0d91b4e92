//! Precomputed token embeddings in safetensors files: the input of `build --embeddings` and
//! `search --query-embeddings`.
//!
//! - A document file holds `embeddings` (f16 or f32, `[total_tokens, dim]`) and `doclens`
//!   (i32 or i64, `[n_docs]`), document `i` owning the next `doclens[i]` rows.
//! - A query file holds `queries` (f16 or f32, `[n_queries, query_len, dim]`).
//!
//! Files are memory-mapped and converted lazily, chunk by chunk, so a file larger than RAM can
//! be indexed. [`writer`] writes both layouts, streaming.

pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use index_format::Bytes;
use safetensors::{Dtype, SafeTensors};

use crate::error::{EngineError, Result};

fn bad(path: &Path, problem: impl Into<String>) -> EngineError {
    EngineError::BadInput { path: path.to_path_buf(), problem: problem.into() }
}

/// The element type of a float tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatType {
    F16,
    F32,
}

/// A memory-mapped safetensors file.
struct Mapped {
    path: PathBuf,
    bytes: Bytes,
}

impl Mapped {
    fn open(path: &Path) -> Result<Self> {
        // A FIFO would block the open (and cannot be mapped): only regular files are read.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(bad(path, "not a regular file, expected a safetensors file"))
            }
            _ => {}
        }
        let file = File::open(path).map_err(|e| EngineError::Io { path: path.to_path_buf(), source: e })?;
        let len = file.metadata().map_err(|e| EngineError::Io { path: path.to_path_buf(), source: e })?.len();
        if len == 0 {
            return Err(bad(path, "empty file, expected a safetensors file"));
        }
        let mmap = index_format::bytes::map_file(&file)
            .map_err(|e| EngineError::Io { path: path.to_path_buf(), source: e })?;
        Ok(Self { path: path.to_path_buf(), bytes: Bytes::from_mmap(mmap) })
    }

    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| bad(&self.path, format!("not a valid safetensors file: {e}")))
    }
}

/// Finds a tensor by name, listing the names present when it is absent.
fn tensor<'a>(st: &SafeTensors<'a>, path: &Path, name: &str) -> Result<safetensors::tensor::TensorView<'a>> {
    st.tensor(name).map_err(|_| {
        let mut names = st.names();
        names.sort();
        bad(path, format!("no tensor named `{name}` (found: {})", names.join(", ")))
    })
}

fn float_type(path: &Path, name: &str, dtype: Dtype) -> Result<FloatType> {
    match dtype {
        Dtype::F16 => Ok(FloatType::F16),
        Dtype::F32 => Ok(FloatType::F32),
        other => Err(bad(path, format!("tensor `{name}` has dtype {other:?}, expected F16 or F32"))),
    }
}

/// Converts little-endian f16 or f32 bytes to f32, rejecting NaN and infinities.
fn to_f32(path: &Path, what: &str, ty: FloatType, raw: &[u8], out: &mut Vec<f32>) -> Result<()> {
    out.clear();
    match ty {
        FloatType::F16 => out.extend(raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        FloatType::F32 => {
            out.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(bad(path, format!("{what} holds a non-finite value ({}) at element {i}", out[i])));
    }
    Ok(())
}

/// Document token embeddings read from a safetensors file.
pub struct DocEmbeddingsFile {
    file: Mapped,
    dim: usize,
    doclens: Vec<u64>,
    n_tokens: u64,
    ty: FloatType,
    data_range: std::ops::Range<usize>,
}

impl std::fmt::Debug for DocEmbeddingsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocEmbeddingsFile")
            .field("path", &self.file.path)
            .field("dim", &self.dim)
            .field("n_docs", &self.doclens.len())
            .field("n_tokens", &self.n_tokens)
            .finish()
    }
}

impl DocEmbeddingsFile {
    /// Opens and validates a document embeddings file: tensor names, dtypes, shapes, and that
    /// `doclens` are positive and sum to the number of embedding rows.
    pub fn open(path: &Path) -> Result<Self> {
        let file = Mapped::open(path)?;
        let (dim, doclens, n_tokens, ty, data_range) = {
            let st = file.tensors()?;
            let emb = tensor(&st, path, "embeddings")?;
            let ty = float_type(path, "embeddings", emb.dtype())?;
            let &[rows, dim] = emb.shape() else {
                return Err(bad(
                    path,
                    format!("tensor `embeddings` has shape {:?}, expected [total_tokens, dim]", emb.shape()),
                ));
            };
            if dim == 0 {
                return Err(bad(path, "tensor `embeddings` has dimension 0"));
            }
            let lens = tensor(&st, path, "doclens")?;
            if lens.shape().len() != 1 {
                return Err(bad(
                    path,
                    format!("tensor `doclens` has shape {:?}, expected [n_docs]", lens.shape()),
                ));
            }
            let doclens: Vec<i64> = match lens.dtype() {
                Dtype::I32 => lens
                    .data()
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect(),
                Dtype::I64 => lens
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8")))
                    .collect(),
                other => {
                    return Err(bad(
                        path,
                        format!("tensor `doclens` has dtype {other:?}, expected I32 or I64"),
                    ))
                }
            };
            if doclens.is_empty() {
                return Err(bad(path, "tensor `doclens` is empty: no documents"));
            }
            if let Some(i) = doclens.iter().position(|&l| l <= 0) {
                return Err(bad(
                    path,
                    format!("document {i} has {} tokens; every document needs at least one", doclens[i]),
                ));
            }
            let doclens: Vec<u64> = doclens.into_iter().map(|l| l as u64).collect();
            let total = doclens.iter().try_fold(0u64, |sum, &l| sum.checked_add(l)).ok_or_else(|| {
                bad(path, format!("doclens sum past 2^64 tokens but `embeddings` has {rows} rows"))
            })?;
            if total != rows as u64 {
                return Err(bad(
                    path,
                    format!("doclens sum to {total} tokens but `embeddings` has {rows} rows"),
                ));
            }
            let start = emb.data().as_ptr() as usize - file.bytes.as_ptr() as usize;
            (dim, doclens, total, ty, start..start + emb.data().len())
        };
        Ok(Self { file, dim, doclens, n_tokens, ty, data_range })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens per document.
    pub fn doclens(&self) -> &[u64] {
        &self.doclens
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.doclens.len()
    }

    /// Total number of tokens.
    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Drops every page of the mapped file from the process's resident set (they stay in the
    /// page cache, and a later read faults them back in). Build calls it after drawing its
    /// training sample: the sample's scattered reads leave pages mapped beyond what
    /// [`DocEmbeddingsFile::rows_f32`] releases (the kernel maps neighbouring cached pages, in
    /// large folios, around each fault), about 570 MB of a 12.8 GB file for a 20 000-document
    /// sample, which would otherwise stay resident until streaming passed over them.
    pub fn release_all(&self) {
        self.file.bytes.release(0..self.file.bytes.len());
    }

    /// Converts token rows `rows` to f32 into `out` (row-major), rejecting non-finite values.
    pub fn rows_f32(&self, rows: std::ops::Range<u64>, out: &mut Vec<f32>) -> Result<()> {
        let size = match self.ty {
            FloatType::F16 => 2,
            FloatType::F32 => 4,
        };
        let row_bytes = self.dim * size;
        let a = self.data_range.start + rows.start as usize * row_bytes;
        let b = self.data_range.start + rows.end as usize * row_bytes;
        assert!(b <= self.data_range.end, "row range out of bounds");
        let what = format!("tensor `embeddings` (rows {}..{})", rows.start, rows.end);
        to_f32(&self.file.path, &what, self.ty, &self.file.bytes[a..b], out)?;
        // Build streams the file once: its pages need not stay in the resident set.
        self.file.bytes.release(a..b);
        Ok(())
    }
}

/// Queries read from a safetensors file, each row-major `[query_len × dim]` f32.
#[derive(Debug, Clone)]
pub struct QueryEmbeddings {
    /// Embedding dimension.
    pub dim: usize,
    /// Tokens per query.
    pub query_len: usize,
    /// One row-major `[query_len × dim]` matrix per query.
    pub queries: Vec<Vec<f32>>,
}

impl QueryEmbeddings {
    /// Reads `queries` (`[n_queries, query_len, dim]`, f16 or f32) from a safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = Mapped::open(path)?;
        let st = file.tensors()?;
        let t = tensor(&st, path, "queries")?;
        let ty = float_type(path, "queries", t.dtype())?;
        let &[n, len, dim] = t.shape() else {
            return Err(bad(
                path,
                format!("tensor `queries` has shape {:?}, expected [n_queries, query_len, dim]", t.shape()),
            ));
        };
        if n == 0 || len == 0 || dim == 0 {
            return Err(bad(path, format!("tensor `queries` has an empty shape {:?}", t.shape())));
        }
        let mut all = Vec::new();
        to_f32(path, "tensor `queries`", ty, t.data(), &mut all)?;
        let queries = all.chunks_exact(len * dim).map(<[f32]>::to_vec).collect();
        Ok(Self { dim, query_len: len, queries })
    }
}
