//! Building an index from token embeddings held anywhere: a safetensors file
//! ([`crate::embeddings::DocEmbeddingsFile`]), memory ([`InMemory`]), or a caller's own
//! [`TokenSource`] (the Python package's numpy arrays). Every front end (CLI, Python) builds
//! through [`build_from_source`], so the same embeddings and parameters give the same index
//! whichever one ran.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use index_format::IndexMeta;

use super::{check_values, sample_docs, BuildOptions, CompressedBuilder, CompressedParams, IndexBuilder};
use super::{TrainingSample, DEFAULT_TRAIN_MEMORY};
use crate::error::{EngineError, Result};

/// Documents as consecutive runs of token rows: document `i` owns the next `doclens()[i]` rows.
pub trait TokenSource {
    /// Embedding dimension.
    fn dim(&self) -> usize;
    /// Tokens per document.
    fn doclens(&self) -> &[u64];
    /// Converts token rows `rows` to f32 into `out` (row-major, replacing its contents).
    ///
    /// # Errors
    /// If the rows cannot be read or hold NaN or infinity.
    fn rows_f32(&self, rows: Range<u64>, out: &mut Vec<f32>) -> Result<()>;
    /// A hint that rows read so far are not needed again soon (the training sample is drawn).
    fn release(&self) {}
    /// The file the rows come from, named in errors about a document's values.
    fn origin(&self) -> Option<&Path> {
        None
    }
}

impl TokenSource for crate::embeddings::DocEmbeddingsFile {
    fn dim(&self) -> usize {
        self.dim()
    }

    fn doclens(&self) -> &[u64] {
        self.doclens()
    }

    fn rows_f32(&self, rows: Range<u64>, out: &mut Vec<f32>) -> Result<()> {
        self.rows_f32(rows, out)
    }

    fn release(&self) {
        self.release_all();
    }

    fn origin(&self) -> Option<&Path> {
        Some(self.path())
    }
}

/// Token rows in memory: a row-major `[total_tokens × dim]` f32 or f16 slice and the
/// documents' lengths (f16 rows are widened a run at a time, never all at once).
#[derive(Debug, Clone, Copy)]
pub struct InMemory<'a> {
    rows: Rows<'a>,
    dim: usize,
    doclens: &'a [u64],
}

#[derive(Debug, Clone, Copy)]
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl<'a> InMemory<'a> {
    /// Views f32 `rows` as documents of `doclens` tokens of dimension `dim`.
    ///
    /// # Errors
    /// If `dim` is 0, a document has no tokens, or the lengths do not add up to the rows given.
    pub fn new(rows: &'a [f32], dim: usize, doclens: &'a [u64]) -> Result<Self> {
        check_shape(rows.len(), dim, doclens)?;
        Ok(InMemory { rows: Rows::F32(rows), dim, doclens })
    }

    /// [`InMemory::new`] for f16 rows.
    ///
    /// # Errors
    /// As [`InMemory::new`].
    pub fn f16(rows: &'a [half::f16], dim: usize, doclens: &'a [u64]) -> Result<Self> {
        check_shape(rows.len(), dim, doclens)?;
        Ok(InMemory { rows: Rows::F16(rows), dim, doclens })
    }
}

/// Checks that `values` values of dimension `dim` are exactly the tokens of `doclens`.
fn check_shape(values: usize, dim: usize, doclens: &[u64]) -> Result<()> {
    if dim == 0 {
        return Err(EngineError::InvalidArgument("embedding dimension 0".into()));
    }
    if let Some(d) = doclens.iter().position(|&l| l == 0) {
        return Err(EngineError::InvalidArgument(format!("document {d} has no tokens (doclens[{d}] = 0)")));
    }
    let total = doclens.iter().try_fold(0u64, |acc, &l| acc.checked_add(l));
    let expected = total.and_then(|t| usize::try_from(t).ok()).and_then(|t| t.checked_mul(dim));
    if expected != Some(values) {
        return Err(EngineError::InvalidArgument(format!(
            "doclens add up to {} tokens, but the embeddings hold {} rows of dimension {dim}",
            total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string()),
            values as f64 / dim as f64
        )));
    }
    Ok(())
}

impl TokenSource for InMemory<'_> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn doclens(&self) -> &[u64] {
        self.doclens
    }

    fn rows_f32(&self, rows: Range<u64>, out: &mut Vec<f32>) -> Result<()> {
        let (a, b) = (rows.start as usize * self.dim, rows.end as usize * self.dim);
        let past = || {
            EngineError::InvalidArgument(format!(
                "rows {}..{} are past the end of the embeddings",
                rows.start, rows.end
            ))
        };
        out.clear();
        match self.rows {
            Rows::F32(all) => out.extend_from_slice(all.get(a..b).ok_or_else(past)?),
            Rows::F16(all) => out.extend(all.get(a..b).ok_or_else(past)?.iter().map(|v| v.to_f32())),
        }
        Ok(())
    }
}

/// What [`build_from_source`] builds besides the embeddings.
#[derive(Debug, Clone)]
pub struct SourceBuild<'a> {
    /// External ids in document order (default `0..n-1`).
    pub ids: Option<&'a [String]>,
    /// `None` for an uncompressed (f16, exact) index; else the compressed index's parameters.
    pub compressed: Option<CompressedParams>,
    /// Documents whose tokens train centroids and codec (default by size, see
    /// [`sample_docs`]).
    pub sample_docs: Option<usize>,
    /// Most bytes of f32 values the training sample may hold.
    pub train_memory: usize,
    /// Overwrite, recorded encoder and build parameters.
    pub options: BuildOptions,
}

impl SourceBuild<'_> {
    /// A compressed build at `nbits` with default parameters.
    pub fn compressed(nbits: u32) -> Self {
        SourceBuild {
            ids: None,
            compressed: Some(CompressedParams::new(nbits)),
            sample_docs: None,
            train_memory: DEFAULT_TRAIN_MEMORY,
            options: BuildOptions::default(),
        }
    }
}

/// Where a build is, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStage {
    /// Training centroids and codec on this many tokens (no progress inside).
    Training {
        /// Tokens in the training sample.
        tokens: usize,
    },
    /// Writing documents: token rows done of the total.
    Writing {
        /// Rows written.
        done: u64,
        /// Rows in all.
        total: u64,
    },
}

/// What [`build_from_source`] built.
#[derive(Debug, Clone)]
pub struct SourceBuilt {
    /// The index's metadata.
    pub meta: IndexMeta,
    /// Tokens centroids and codec were trained on (0 for an uncompressed index).
    pub train_tokens: usize,
    /// Tokens of the sample documents (more than `train_tokens` when the sample was bounded by
    /// [`SourceBuild::train_memory`]).
    pub sample_tokens: u64,
    /// Time spent drawing the sample and training.
    pub training: Duration,
}

/// Token rows converted per write.
const CHUNK_TOKENS: u64 = 1 << 16;

/// Builds an index at `dest` from every document of `source`: for a compressed index, centroids
/// and codec are trained on a seeded sample of documents first; documents are then streamed in
/// runs of about 65k tokens. Nothing appears at `dest` unless the whole build succeeds.
///
/// # Errors
/// If the ids do not match the documents, a document holds NaN or infinity (named by its id),
/// or the index cannot be written.
pub fn build_from_source(
    dest: &Path,
    source: &dyn TokenSource,
    job: SourceBuild<'_>,
    progress: &mut dyn FnMut(BuildStage),
) -> Result<SourceBuilt> {
    let start = Instant::now();
    let (dim, lens) = (source.dim(), source.doclens());
    check_ids(job.ids, lens.len())?;
    let id_of = |d: usize| job.ids.map_or_else(|| d.to_string(), |ids| ids[d].clone());
    // An error about a document's values names the file it came from; others (writing the
    // index) stand as they are.
    let in_origin = |e: EngineError| match (source.origin(), &e) {
        (
            Some(path),
            EngineError::InvalidArgument(_)
            | EngineError::NonFinite { .. }
            | EngineError::DuplicateId { .. }
            | EngineError::DimMismatch { .. },
        ) => EngineError::BadInput { path: path.to_path_buf(), problem: e.to_string() },
        _ => e,
    };
    let total: u64 = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l)).ok_or_else(|| {
        EngineError::InvalidArgument("the documents' lengths add up to more than 2^64 tokens".into())
    })?;
    let starts: Vec<u64> = std::iter::once(0)
        .chain(lens.iter().scan(0u64, |acc, &l| {
            *acc += l;
            Some(*acc)
        }))
        .collect();
    let (mut train_tokens, mut sample_tokens, mut training) = (0, 0, Duration::ZERO);
    let mut sink = match job.compressed {
        None => Sink::Plain(Box::new(IndexBuilder::create(dest, dim, job.options)?)),
        Some(params) => {
            let seed = params.seed;
            let mut builder = CompressedBuilder::create(dest, dim, params, job.options)?;
            let mut sample = TrainingSample::with_memory(dim, job.train_memory, seed);
            let mut buf = Vec::new();
            for d in sample_docs(lens.len(), job.sample_docs, seed) {
                source.rows_f32(starts[d]..starts[d + 1], &mut buf)?;
                // Checked here: the training sample would only say which of its rows is at fault.
                check_values(&id_of(d), &buf, dim).map_err(in_origin)?;
                sample.add(&buf);
            }
            source.release();
            (train_tokens, sample_tokens) = (sample.len(), sample.seen());
            progress(BuildStage::Training { tokens: train_tokens });
            builder.train_sample(sample, total)?;
            training = start.elapsed();
            Sink::Compressed(Box::new(builder))
        }
    };
    progress(BuildStage::Writing { done: 0, total });
    stream_documents(
        source,
        job.ids,
        &mut |id, tokens| sink.add(id, tokens).map_err(in_origin),
        &mut |done| progress(BuildStage::Writing { done, total }),
    )?;
    Ok(SourceBuilt { meta: sink.finish()?, train_tokens, sample_tokens, training })
}

/// Hands every document of `source` to `add` (its external id, default its number, and its
/// row-major f32 tokens) in order, converting runs of whole documents of about 65k tokens at a
/// time; `progress` gets the number of token rows done after each run.
///
/// # Errors
/// The first error of reading `source` or of `add`.
pub fn stream_documents(
    source: &dyn TokenSource,
    ids: Option<&[String]>,
    add: &mut dyn FnMut(&str, &[f32]) -> Result<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let (dim, lens) = (source.dim(), source.doclens());
    check_ids(ids, lens.len())?;
    let mut buf = Vec::new();
    let (mut doc, mut row) = (0usize, 0u64);
    while doc < lens.len() {
        let first = doc;
        let mut end_row = row;
        while doc < lens.len() && (doc == first || end_row + lens[doc] <= row + CHUNK_TOKENS) {
            end_row += lens[doc];
            doc += 1;
        }
        source.rows_f32(row..end_row, &mut buf)?;
        let mut offset = 0usize;
        for (d, &len) in lens.iter().enumerate().take(doc).skip(first) {
            let n = len as usize * dim;
            let id = ids.map_or_else(|| d.to_string(), |ids| ids[d].clone());
            add(&id, &buf[offset..offset + n])?;
            offset += n;
        }
        row = end_row;
        progress(row);
    }
    Ok(())
}

/// That `ids`, when given, name exactly `n_docs` documents.
fn check_ids(ids: Option<&[String]>, n_docs: usize) -> Result<()> {
    match ids {
        Some(ids) if ids.len() != n_docs => {
            Err(EngineError::InvalidArgument(format!("{} ids given for {n_docs} documents", ids.len())))
        }
        _ => Ok(()),
    }
}

/// The builder of either index kind.
enum Sink {
    Plain(Box<IndexBuilder>),
    Compressed(Box<CompressedBuilder>),
}

impl Sink {
    fn add(&mut self, id: &str, tokens: &[f32]) -> Result<()> {
        match self {
            Sink::Plain(b) => b.add(id, tokens),
            Sink::Compressed(b) => b.add(id, tokens),
        }
    }

    fn finish(self) -> Result<IndexMeta> {
        match self {
            Sink::Plain(b) => b.finish(),
            Sink::Compressed(b) => b.finish(),
        }
    }
}
