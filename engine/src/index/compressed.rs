//! Writing a residual-compressed index (format v7: v4's run-coded layout, the id table, the
//! norm factors of unit-norm tokens and, with [`CompressedParams::warp_layout`], the
//! centroid-grouped copy WARP mode reads; `build --nbits 1|2|4`) from a stream of documents.
//!
//! The build runs in three steps:
//!
//! 1. [`CompressedBuilder::train`] runs k-means on a sample of token embeddings (the caller picks
//!    the sample, e.g. with [`sample_docs`], bounded in memory by a [`TrainingSample`] and given
//!    to [`CompressedBuilder::train_sample`]), rounds the centroids to f16 (what is stored), and
//!    trains the residual codec on the residuals of a held-out part of the sample.
//! 2. [`CompressedBuilder::add`] buffers documents, and every [`FLUSH_TOKENS`] tokens assigns them
//!    to their nearest centroid and quantises their residuals, streaming codes (bit-packed),
//!    packed residuals (and, with [`CompressedParams::store_f16`], the exact f16 embeddings) to
//!    their files.
//! 3. [`CompressedBuilder::finish`] builds the inverted file from the codes file (memory-mapped,
//!    one pass per block of centroids whose lists fit in [`IVF_BLOCK_ENTRIES`]; each list
//!    Rice-coded as it is written), writes the small files and publishes the index atomically.
//!
//! Memory is bounded by the sample, the centroids, one flush buffer, per-document metadata
//! (offsets and ids) and one IVF block: never by the corpus.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use index_format::bytes::{as_bytes, map_file};
use index_format::footer::Footer;
use index_format::packed::{best_rice_param, packed_words, put_rice_list, BitWriter};
use index_format::runs::{doc_rice_param, pack_offsets, put_doc_runs, DocCodes, MAX_OFFSET_BITS};
use index_format::{
    Component, ComponentWriter, IndexKind, IndexMeta, IndexWriter, ResidualMeta, FORMAT_VERSION,
};
use rayon::prelude::*;

use super::build::{check_doc, BuildOptions};
use super::decode_scale::{self, DecodeScale};
use super::sample::TrainingSample;
use crate::codec::{residuals, Codec, CodecConfig, Norm};
use crate::error::{EngineError, Result};
use crate::kmeans::{self, KMeansConfig};

/// Tokens buffered before they are assigned and encoded in one batch.
pub const FLUSH_TOKENS: usize = 1 << 14;
/// Most IVF entries (u32 document ids) held in memory at once while building the inverted file.
pub const IVF_BLOCK_ENTRIES: usize = 1 << 24;

/// Fewest k-means points per centroid when a bounded training sample caps the default number
/// of centroids (see [`CompressedBuilder::train_sample`]). Low on purpose: on NPL with
/// all-MiniLM-L6-v2, 8192 centroids trained on 10 points each gave higher recall against
/// exhaustive search (0.952 at 10, 0.953 at 100) than 2048 centroids on 40 points each (0.950,
/// 0.934): more cells prune more finely, even when each is placed less precisely.
pub const MIN_POINTS_PER_CENTROID: usize = 8;

/// Parameters of a compressed build.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressedParams {
    /// Bits per dimension of the quantised residual: 1, 2 or 4.
    pub nbits: u32,
    /// Number of centroids; `None` uses [`kmeans::default_num_centroids`] of the corpus token
    /// count (capped by [`CompressedBuilder::train_sample`] when its sample left tokens out).
    /// Clamped to the number of sample tokens (k-means cannot place more centroids than it has
    /// points).
    pub n_centroids: Option<usize>,
    /// k-means iterations (at most; it stops early when assignments settle).
    pub kmeans_iters: usize,
    /// Seed of the sample selection and k-means: equal inputs, seeds and [`Self::kernels`] give
    /// byte-identical indexes on the same kind of CPU, whatever its load (kernels are chosen by
    /// CPU features, never by timing; other kernels may round near-ties differently).
    pub seed: u64,
    /// The residual codec (bucket placement, pooled or per-dimension).
    pub codec: CodecConfig,
    /// Keep the exact f16 embeddings too (`embeddings.f16`), for exact rescoring of the final
    /// candidates (costs `2 × dim` bytes per token).
    pub store_f16: bool,
    /// Keep a centroid-grouped copy of the codes (format v7's `warp_*` files, about
    /// `dim · nbits / 8 + 6` bytes per token plus each centroid's last block padded to 64
    /// tokens), which the WARP search mode reads in place: no in-memory copy built at the first
    /// WARP search, and WARP mode over indexes larger than memory.
    pub warp_layout: bool,
    /// The kernels of k-means (its Lloyd assignments run in bf16 where these have a bf16
    /// product that [`kernels::Precision::Auto`] picks).
    pub kernels: kernels::Kernels,
}

impl CompressedParams {
    /// Defaults for `nbits`: automatic centroid count, 4 k-means iterations (as Stanford ColBERT),
    /// seed 0, per-dimension Lloyd–Max buckets, no f16 copy, [`kernels::Kernels::auto`].
    pub fn new(nbits: u32) -> Self {
        CompressedParams {
            nbits,
            n_centroids: None,
            kmeans_iters: 4,
            seed: 0,
            codec: CodecConfig::joint(nbits),
            store_f16: false,
            warp_layout: false,
            kernels: kernels::Kernels::auto(),
        }
    }
}

/// Picks which documents to train on: `min(n_docs, wanted)` distinct document numbers (default
/// [`kmeans::default_sample_docs`]), drawn with `seed`, returned in increasing order.
pub fn sample_docs(n_docs: usize, wanted: Option<usize>, seed: u64) -> Vec<usize> {
    let n = wanted.unwrap_or_else(|| kmeans::default_sample_docs(n_docs)).min(n_docs);
    if n == n_docs {
        return (0..n_docs).collect();
    }
    // Partial Fisher–Yates over a virtual identity permutation.
    let mut rng = crate::rng::Rng::new(seed ^ 0x5A4D_504C_4544_4F43);
    let mut swapped = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let j = i + rng.below(n_docs - i);
        let vj = *swapped.get(&j).unwrap_or(&j);
        let vi = *swapped.get(&i).unwrap_or(&i);
        swapped.insert(j, vi);
        out.push(vj);
    }
    out.sort_unstable();
    out
}

/// State after [`CompressedBuilder::train`].
struct Trained {
    centroids: Vec<f32>,
    /// Assignment to `centroids`, prepared once (bf16-packed where that is faster; the f32 codes).
    assigner: kmeans::CheckedAssigner,
    codec: Codec,
    /// The energy scale of the held-out residuals and whether it helps (`decode_scale`): applied
    /// to the stored decoding tables when chosen and every token turns out to have unit norm
    /// (decoding then renormalises).
    decode_scale: DecodeScale,
    /// `codes.rice`: every document's codes, run-coded.
    codes: BitWriter<ComponentWriter>,
    /// Where each document's codes start in `codes.rice` (and, last, its length in bits).
    code_offsets: Vec<u64>,
    residuals: ComponentWriter,
    /// Number of documents listing each centroid (IVF list lengths).
    list_lens: Vec<u64>,
    /// Set when the codebook came from an existing index ([`CompressedBuilder::with_codebook`]).
    stored: Option<StoredCodebook>,
}

/// What a segment encoded with an existing index's codebook stores as that index does.
struct StoredCodebook {
    buckets: Vec<f32>,
    unit_norm: bool,
    build: serde_json::Value,
}

/// A trained codebook taken from an existing compressed index, to encode new documents the way
/// its own were encoded (a new segment of it; see [`CompressedBuilder::with_codebook`]).
#[derive(Debug, Clone)]
pub struct Codebook {
    /// The index's centroids (its stored f16 values, in f32), row-major `C × dim`.
    pub centroids: Vec<f32>,
    /// The codec that encodes residuals (the trained, unscaled tables).
    pub codec: Codec,
    /// `buckets.f32` exactly as the index stores it (decoding tables possibly scaled).
    pub stored_buckets: Vec<f32>,
    /// Whether the index's tokens are unit-norm (decoding renormalises): new documents must be.
    pub unit_norm: bool,
    /// The index's build record, copied into the new segment's.
    pub build: serde_json::Value,
}

/// Streams documents into a new residual-compressed index. Call [`CompressedBuilder::train`]
/// once, then [`CompressedBuilder::add`] for every document, then
/// [`CompressedBuilder::finish`]. Nothing is visible at the destination until `finish`
/// succeeds; dropping the builder discards the partial files.
pub struct CompressedBuilder {
    writer: IndexWriter,
    dim: usize,
    params: CompressedParams,
    options: BuildOptions,
    trained: Option<Trained>,
    embeddings: Option<ComponentWriter>,
    doc_offsets: Vec<u64>,
    ids: Vec<u8>,
    id_offsets: Vec<u64>,
    seen_ids: HashSet<String>,
    /// Documents added but not yet encoded: their tokens, row-major.
    pending: Vec<f32>,
    /// Document of the first pending token.
    pending_first_doc: usize,
    sample_tokens: usize,
    centroid_fit: f64,
    codes_buf: Vec<u32>,
    packed: Vec<u8>,
    /// The pending tokens reordered by centroid within each document, row-major.
    sorted: Vec<f32>,
    /// Whether a token added so far has an L2 norm off 1 by more than [`UNIT_NORM_TOLERANCE`].
    not_unit_norm: bool,
    /// Sum over the tokens encoded from f32 of their dot product with their centroid, and their
    /// number: the mean is the `token_fit` recorded in the metadata.
    fit_sum: f64,
    fit_tokens: u64,
}

/// How far from 1 a token's L2 norm may be for the index to count its tokens as unit-norm
/// ([`ResidualMeta::unit_norm`]): f16 inputs carry a relative rounding error of about 1e-3.
pub const UNIT_NORM_TOLERANCE: f32 = 0.01;

impl std::fmt::Debug for CompressedBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedBuilder")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("n_docs", &self.n_docs())
            .finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Io { path: path.to_path_buf(), source: e }
}

/// The first non-finite value of a row-major matrix, as (row, column).
fn non_finite(values: &[f32], dim: usize) -> Option<(usize, usize)> {
    values.iter().position(|v| !v.is_finite()).map(|i| (i / dim, i % dim))
}

impl CompressedBuilder {
    /// Starts a compressed index of dimension `dim` at `dest`.
    ///
    /// # Errors
    /// If `dim` is not a positive multiple of 8, `nbits` is not 1, 2 or 4, or the destination
    /// cannot be created (or exists, without `overwrite`).
    pub fn create(dest: &Path, dim: usize, params: CompressedParams, options: BuildOptions) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(8) {
            return Err(EngineError::InvalidArgument(format!(
                "embedding dimension {dim} is not supported: it must be a positive multiple of 8"
            )));
        }
        if !matches!(params.nbits, 1 | 2 | 4) {
            return Err(EngineError::InvalidArgument(format!(
                "nbits {} is not supported by the compressed index: use 1, 2 or 4 (or 16 for uncompressed)",
                params.nbits
            )));
        }
        if params.codec.nbits != params.nbits {
            return Err(EngineError::InvalidArgument("codec nbits differs from the build's nbits".into()));
        }
        if params.n_centroids == Some(0) {
            return Err(EngineError::InvalidArgument("the number of centroids must be positive".into()));
        }
        let writer = IndexWriter::create(dest, options.overwrite)?;
        Self::create_in(writer, dim, params, options)
    }

    /// [`CompressedBuilder::create`] into a writer the caller made (e.g. a new segment of an
    /// index, [`IndexWriter::create_segment`]).
    ///
    /// # Errors
    /// As [`CompressedBuilder::create`].
    pub fn create_in(
        writer: IndexWriter,
        dim: usize,
        params: CompressedParams,
        options: BuildOptions,
    ) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(8) || !matches!(params.nbits, 1 | 2 | 4) {
            return Err(EngineError::InvalidArgument(format!(
                "dimension {dim} and nbits {} do not make a compressed index",
                params.nbits
            )));
        }
        let embeddings = if params.store_f16 { Some(writer.component(Component::Embeddings)?) } else { None };
        Ok(Self {
            writer,
            dim,
            params,
            options,
            trained: None,
            embeddings,
            doc_offsets: vec![0],
            ids: Vec::new(),
            id_offsets: vec![0],
            seen_ids: HashSet::new(),
            pending: Vec::new(),
            pending_first_doc: 0,
            sample_tokens: 0,
            centroid_fit: 0.0,
            codes_buf: Vec::new(),
            packed: Vec::new(),
            sorted: Vec::new(),
            not_unit_norm: false,
            fit_sum: 0.0,
            fit_tokens: 0,
        })
    }

    /// The temporary directory the index is being written in: what is created there (the BM25
    /// index) is published with the index by `finish`, or removed with it on failure.
    pub fn temp_dir(&self) -> &Path {
        self.writer.temp_dir()
    }

    /// Number of documents added so far.
    pub fn n_docs(&self) -> usize {
        self.doc_offsets.len() - 1
    }

    /// Number of centroids, once trained.
    pub fn n_centroids(&self) -> Option<usize> {
        self.trained.as_ref().map(|t| t.centroids.len() / self.dim)
    }

    /// Trains centroids and codec on `sample` (row-major `[n × dim]` token embeddings, e.g. the
    /// tokens of [`sample_docs`]). `corpus_tokens` is the corpus's total token count, which sets
    /// the default number of centroids.
    ///
    /// Every 20th sample token (when the sample has at least 1000) is held out of k-means and
    /// used to learn the codec's buckets, so that they reflect residuals of unseen tokens.
    ///
    /// # Errors
    /// If called twice, the sample is empty or misshapen, or holds NaN or infinity.
    pub fn train(&mut self, sample: &[f32], corpus_tokens: u64) -> Result<()> {
        self.train_owned(sample.to_vec(), corpus_tokens)
    }

    /// [`CompressedBuilder::train`] on a sample the builder may consume: the held-out tokens are
    /// split off in place, so training needs about 1.05× the sample's memory instead of 2×.
    ///
    /// # Errors
    /// As [`CompressedBuilder::train`].
    pub fn train_owned(&mut self, sample: Vec<f32>, corpus_tokens: u64) -> Result<()> {
        self.train_rows(sample, corpus_tokens, false)
    }

    /// [`CompressedBuilder::train`] on a bounded [`TrainingSample`]. When the sample had to leave
    /// tokens out (it filled), the default number of centroids is also capped so that k-means
    /// has at least [`MIN_POINTS_PER_CENTROID`] points per centroid: the power of two at or below
    /// `fit tokens / MIN_POINTS_PER_CENTROID`. An explicit [`CompressedParams::n_centroids`] is
    /// kept.
    ///
    /// # Errors
    /// As [`CompressedBuilder::train`].
    pub fn train_sample(&mut self, sample: TrainingSample, corpus_tokens: u64) -> Result<()> {
        let capped = sample.is_subsampled();
        self.train_rows(sample.into_rows(), corpus_tokens, capped)
    }

    fn train_rows(&mut self, sample: Vec<f32>, corpus_tokens: u64, cap_centroids: bool) -> Result<()> {
        if self.trained.is_some() {
            return Err(EngineError::InvalidArgument("the compressed builder is already trained".into()));
        }
        let dim = self.dim;
        if sample.is_empty() || !sample.len().is_multiple_of(dim) {
            return Err(EngineError::InvalidArgument(format!(
                "training sample of {} values is empty or not a whole number of {dim}-d tokens",
                sample.len()
            )));
        }
        if let Some((row, col)) = non_finite(&sample, dim) {
            return Err(EngineError::NonFinite { what: "training sample".into(), row, col });
        }
        // Centroids are stored in f16: a value it cannot hold is refused (documents are checked
        // the same way when added).
        super::build::check_values_of(&sample, dim, || "the training sample".into())?;
        let n = sample.len() / dim;
        let (fit, heldout): (Vec<f32>, Vec<f32>) = if n >= 1000 {
            // Every 20th row moves to `held`; the others are compacted to the front in place.
            let mut fit = sample;
            let mut held = Vec::with_capacity((n / 20 + 1) * dim);
            let mut kept = 0;
            for i in 0..n {
                if i % 20 == 19 {
                    held.extend_from_slice(&fit[i * dim..(i + 1) * dim]);
                } else {
                    fit.copy_within(i * dim..(i + 1) * dim, kept * dim);
                    kept += 1;
                }
            }
            fit.truncate(kept * dim);
            (fit, held)
        } else {
            (sample.clone(), sample)
        };
        let wanted = self.params.n_centroids.unwrap_or_else(|| {
            let k = kmeans::default_num_centroids(corpus_tokens.max(n as u64) as usize);
            match cap_centroids {
                true => k.min(kmeans::floor_pow2((fit.len() / dim / MIN_POINTS_PER_CENTROID).max(1))),
                false => k,
            }
        });
        let k = wanted.min(fit.len() / dim).max(1);
        let config = KMeansConfig {
            k,
            max_iters: self.params.kmeans_iters.max(1),
            seed: self.params.seed,
            kernels: self.params.kernels,
            ..KMeansConfig::new(k)
        };
        let mut centroids = kmeans::train(&fit, dim, &config)?.into_centroids();
        // Residuals are taken against the stored (f16) centroids, so decoding reproduces them.
        kmeans::round_to_f16(&mut centroids);
        let held_codes = kmeans::assign(&heldout, &centroids, dim)?;
        let res = residuals(&heldout, &held_codes, &centroids, dim)?;
        // How well centroids represent tokens: the mean dot product of a held-out token with its
        // centroid (near 1 for clustered data, low for structureless data, where centroid pruning
        // cannot work and search falls back to exhaustive; see SearchParams::min_centroid_fit).
        let fit = heldout
            .chunks_exact(dim)
            .zip(&held_codes)
            .map(|(t, &c)| {
                t.iter().zip(&centroids[c as usize * dim..]).map(|(a, b)| (a * b) as f64).sum::<f64>()
            })
            .sum::<f64>()
            / (heldout.len() / dim) as f64;
        self.centroid_fit = fit;
        let codec = Codec::train_with(&res, dim, &self.params.codec)?;
        let decode_scale = decode_scale::choose(&codec, &heldout, &res, &held_codes, &centroids)?;
        let c = centroids.len() / dim;
        let codes = BitWriter::new(self.writer.component(Component::CodesRice)?);
        let residuals = self.writer.component(Component::Residuals)?;
        self.sample_tokens = n;
        self.trained = Some(Trained {
            assigner: kmeans::CheckedAssigner::new(&centroids, dim)?,
            centroids,
            codec,
            decode_scale,
            codes,
            code_offsets: vec![0],
            residuals,
            list_lens: vec![0; c],
            stored: None,
        });
        Ok(())
    }

    /// Uses an existing index's `codebook` instead of training one: new documents are assigned
    /// to its centroids and encoded with its codec, and the segment stores its centroids and
    /// decoding tables unchanged, so that it decodes exactly as the index does.
    ///
    /// # Errors
    /// If called after training, or the codebook does not have this builder's dimension.
    pub fn with_codebook(&mut self, codebook: Codebook) -> Result<()> {
        if self.trained.is_some() {
            return Err(EngineError::InvalidArgument("the compressed builder is already trained".into()));
        }
        let dim = self.dim;
        if codebook.centroids.is_empty()
            || !codebook.centroids.len().is_multiple_of(dim)
            || codebook.codec.dim() != dim
        {
            return Err(EngineError::DimMismatch {
                what: "the codebook".into(),
                expected: dim,
                got: codebook.codec.dim(),
            });
        }
        let c = codebook.centroids.len() / dim;
        let codes = BitWriter::new(self.writer.component(Component::CodesRice)?);
        let residuals = self.writer.component(Component::Residuals)?;
        self.trained = Some(Trained {
            assigner: kmeans::CheckedAssigner::new(&codebook.centroids, dim)?,
            centroids: codebook.centroids,
            codec: codebook.codec,
            decode_scale: DecodeScale { energy: 1.0, recall_unscaled: 0.0, recall_scaled: 0.0 },
            codes,
            code_offsets: vec![0],
            residuals,
            list_lens: vec![0; c],
            stored: Some(StoredCodebook {
                buckets: codebook.stored_buckets,
                unit_norm: codebook.unit_norm,
                build: codebook.build,
            }),
        });
        Ok(())
    }

    /// Adds one document already encoded with this builder's codebook (compaction copies
    /// documents between segments this way): its centroid `codes`, its packed residual rows
    /// (`codes.len() × packed_len` bytes, token `i`'s row for `codes[i]`), and its exact f16
    /// tokens when the builder keeps them. Tokens are stored ordered by centroid, as [`add`]
    /// stores them.
    ///
    /// [`add`]: CompressedBuilder::add
    ///
    /// # Errors
    /// As [`CompressedBuilder::add`], and if a code is not a centroid or the sizes disagree.
    pub fn add_encoded(
        &mut self,
        id: &str,
        codes: &[u32],
        residuals: &[u8],
        exact: Option<&[f16]>,
    ) -> Result<()> {
        self.flush()?;
        let dim = self.dim;
        let Some(t) = self.trained.as_ref() else {
            return Err(EngineError::InvalidArgument("the compressed builder has no codebook".into()));
        };
        let (pl, c) = (t.codec.packed_len(), t.list_lens.len());
        if codes.is_empty() || residuals.len() != codes.len() * pl || codes.iter().any(|&x| x as usize >= c) {
            return Err(EngineError::InvalidArgument(format!(
                "document `{id}`: {} codes and {} residual bytes do not fit the codebook",
                codes.len(),
                residuals.len()
            )));
        }
        if self.embeddings.is_some() != exact.is_some() || exact.is_some_and(|e| e.len() != codes.len() * dim)
        {
            return Err(EngineError::InvalidArgument(format!(
                "document `{id}`: exact embeddings are required exactly when the segment keeps them"
            )));
        }
        let placeholder = vec![0f32; dim];
        check_doc(id, &placeholder, dim, self.n_docs(), &mut self.seen_ids)?;
        let mut order: Vec<usize> = (0..codes.len()).collect();
        order.sort_by_key(|&i| codes[i]);
        let sorted_codes: Vec<u32> = order.iter().map(|&i| codes[i]).collect();
        self.packed.clear();
        for &i in &order {
            self.packed.extend_from_slice(&residuals[i * pl..(i + 1) * pl]);
        }
        let t = self.trained.as_mut().expect("checked above");
        let k = doc_rice_param(c as u64, sorted_codes.len() as u64);
        if let Err(e) = put_doc_runs(&mut t.codes, &sorted_codes, k) {
            return Err(io_err(t.codes.get_ref().path())(e));
        }
        t.code_offsets.push(t.codes.bits());
        let mut prev = None;
        for &x in &sorted_codes {
            if prev != Some(x) {
                t.list_lens[x as usize] += 1;
                prev = Some(x);
            }
        }
        t.residuals.write_all(&self.packed).map_err(io_err(t.residuals.path()))?;
        if let (Some(e), Some(exact)) = (self.embeddings.as_mut(), exact) {
            let rows: Vec<f16> =
                order.iter().flat_map(|&i| exact[i * dim..(i + 1) * dim].iter().copied()).collect();
            e.write_all(as_bytes(&rows)).map_err(io_err(e.path()))?;
        }
        let last = *self.doc_offsets.last().expect("non-empty");
        self.doc_offsets.push(last + codes.len() as u64);
        self.ids.extend_from_slice(id.as_bytes());
        self.id_offsets.push(self.ids.len() as u64);
        self.pending_first_doc = self.n_docs();
        Ok(())
    }

    /// Adds one document: its external id and its token embeddings (row-major `[n × dim]`).
    ///
    /// # Errors
    /// If the builder is not trained, the id is empty, repeated or holds a tab or newline, the
    /// document has no tokens or the wrong dimension, a value is NaN or infinite, or a file
    /// cannot be written.
    pub fn add(&mut self, id: &str, tokens: &[f32]) -> Result<()> {
        if self.trained.is_none() {
            return Err(EngineError::InvalidArgument(
                "call train on a sample before adding documents to a compressed index".into(),
            ));
        }
        if let Some((row, col)) = non_finite(tokens, self.dim) {
            return Err(EngineError::NonFinite { what: format!("document `{id}`"), row, col });
        }
        check_doc(id, tokens, self.dim, self.n_docs(), &mut self.seen_ids)?;
        if !self.not_unit_norm {
            self.not_unit_norm = tokens
                .chunks_exact(self.dim)
                .any(|t| (t.iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs() > UNIT_NORM_TOLERANCE);
        }
        let last = *self.doc_offsets.last().expect("non-empty");
        self.doc_offsets.push(last + (tokens.len() / self.dim) as u64);
        self.ids.extend_from_slice(id.as_bytes());
        self.id_offsets.push(self.ids.len() as u64);
        self.pending.extend_from_slice(tokens);
        if self.pending.len() >= FLUSH_TOKENS * self.dim {
            self.flush()?;
        }
        Ok(())
    }

    /// Assigns the pending documents, orders each one's tokens by centroid, encodes them and
    /// writes them out.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let dim = self.dim;
        let t = self.trained.as_mut().expect("trained");
        // The f32 codes, from bf16 products checked exactly where the CPU has a fast one.
        let codes = t.assigner.assign(&self.pending)?;
        for (tok, &c) in self.pending.chunks_exact(dim).zip(&codes) {
            self.fit_sum +=
                f64::from(crate::codec::dot(tok, &t.centroids[c as usize * dim..(c as usize + 1) * dim]));
        }
        self.fit_tokens += codes.len() as u64;
        let n_centroids = t.list_lens.len() as u64;
        // Each document's tokens in the order of their centroids (ties in their original
        // order): its codes are then runs, and every stored array follows that order.
        let first_tok = self.doc_offsets[self.pending_first_doc];
        let mut order: Vec<u32> = Vec::with_capacity(codes.len());
        self.codes_buf.clear();
        self.sorted.clear();
        for doc in self.pending_first_doc..self.doc_offsets.len() - 1 {
            let a = (self.doc_offsets[doc] - first_tok) as usize;
            let b = (self.doc_offsets[doc + 1] - first_tok) as usize;
            order.clear();
            order.extend(a as u32..b as u32);
            order.sort_by_key(|&i| codes[i as usize]);
            let start = self.codes_buf.len();
            for &i in &order {
                let i = i as usize;
                self.codes_buf.push(codes[i]);
                self.sorted.extend_from_slice(&self.pending[i * dim..(i + 1) * dim]);
            }
            let doc_codes = &self.codes_buf[start..];
            let k = doc_rice_param(n_centroids, doc_codes.len() as u64);
            if let Err(e) = put_doc_runs(&mut t.codes, doc_codes, k) {
                return Err(io_err(t.codes.get_ref().path())(e));
            }
            t.code_offsets.push(t.codes.bits());
            // IVF list lengths: each document counts once per distinct centroid.
            let mut prev = None;
            for &c in doc_codes {
                if prev != Some(c) {
                    t.list_lens[c as usize] += 1;
                    prev = Some(c);
                }
            }
        }
        self.packed.clear();
        t.codec.encode_batch(&self.sorted, &self.codes_buf, &t.centroids, &mut self.packed)?;
        t.residuals.write_all(&self.packed).map_err(io_err(t.residuals.path()))?;
        if let Some(e) = self.embeddings.as_mut() {
            let half: Vec<f16> = self.sorted.iter().map(|&v| f16::from_f32(v)).collect();
            e.write_all(as_bytes(&half)).map_err(io_err(e.path()))?;
        }
        self.pending.clear();
        self.pending_first_doc = self.n_docs();
        Ok(())
    }

    /// Writes the remaining files and publishes the index; returns its metadata.
    ///
    /// # Errors
    /// If no document was added, the builder was never trained, or a file cannot be written.
    pub fn finish(mut self) -> Result<IndexMeta> {
        if self.trained.is_none() {
            return Err(EngineError::InvalidArgument("the compressed builder was never trained".into()));
        }
        if self.n_docs() == 0 {
            return Err(EngineError::InvalidArgument("no documents to index".into()));
        }
        self.flush()?;
        let Self {
            writer,
            dim,
            params,
            options,
            trained,
            embeddings,
            doc_offsets,
            ids,
            id_offsets,
            centroid_fit,
            not_unit_norm,
            fit_sum,
            fit_tokens,
            ..
        } = self;
        let Trained {
            centroids, codec, decode_scale, codes, code_offsets, residuals, list_lens, stored, ..
        } = trained.expect("trained");
        if stored.as_ref().is_some_and(|s| s.unit_norm) && not_unit_norm {
            return Err(EngineError::InvalidArgument(
                "the index's tokens have unit norm and decoding renormalises them, but some new tokens \
                 do not: normalise the embeddings as the index's were"
                    .into(),
            ));
        }
        let n_centroids = list_lens.len();
        let codes_path = codes.get_ref().path().to_path_buf();
        let total_bits = codes.bits();
        codes.finish().map_err(io_err(&codes_path))?.finish()?;
        let stream_bytes = 8 * packed_words(total_bits);
        let code_offsets = pack_offsets(&code_offsets, stream_bytes).ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "the codes take {stream_bytes} bytes, more than a {MAX_OFFSET_BITS}-bit offset can address"
            ))
        })?;
        writer.write_component(Component::CodeOffsets, &code_offsets)?;
        residuals.finish()?;
        let has_embeddings = embeddings.is_some();
        if let Some(e) = embeddings {
            e.finish()?;
        }
        write_ivf(&writer, &doc_offsets, &code_offsets, &list_lens)?;
        let half: Vec<f16> = kmeans::to_f16(&centroids);
        writer.write_component(Component::Centroids, as_bytes(&half))?;
        // Tokens were encoded against the trained tables; decoding reads the stored ones, scaled
        // to the residuals' energy when search renormalises decoded tokens and the held-out check
        // found it ranks neighbours better (decode_scale.rs).
        let (unit_norm, scale, buckets) = match &stored {
            Some(s) => (s.unit_norm, 1.0, s.buckets.clone()),
            None => {
                let unit_norm = !not_unit_norm;
                let scale = if unit_norm { decode_scale.chosen() } else { 1.0 };
                let mut buckets = codec.cutoffs().to_vec();
                buckets.extend(codec.scaled_weights(scale));
                (unit_norm, scale, buckets)
            }
        };
        writer.write_component(Component::Buckets, as_bytes(&buckets))?;
        // A unit-norm index stores each token's inverse decoded norm, decoded with the stored
        // tables: scoring through lookup tables then never decodes a token.
        if unit_norm {
            let (cutoffs, weights) = buckets.split_at(codec.cutoffs().len());
            let decoding = Codec::from_parts(dim, params.nbits, cutoffs.to_vec(), weights.to_vec())?;
            write_norms(&writer, &doc_offsets, &code_offsets, n_centroids, &decoding, &centroids)?;
        }
        if params.warp_layout {
            let positions = codec.packed_len();
            super::warp_layout::write(
                &writer,
                &doc_offsets,
                &code_offsets,
                n_centroids,
                positions,
                unit_norm,
            )?;
        }
        writer.write_component(Component::DocOffsets, as_bytes(&doc_offsets))?;
        writer.write_component(Component::DocIdOffsets, as_bytes(&id_offsets))?;
        writer.write_component(Component::DocIdBytes, &ids)?;
        super::build::write_id_table(&writer, &ids, &id_offsets)?;
        let token_fit = (fit_tokens > 0).then(|| fit_sum / fit_tokens as f64);
        let build = match stored {
            Some(s) => {
                // The index's record, with what this segment measured and was made from.
                let mut build = if s.build.is_object() { s.build } else { serde_json::json!({}) };
                build["segment"] = options.build_params;
                if let Some(fit) = token_fit {
                    build["segment_token_fit"] = fit.into();
                }
                build
            }
            None => {
                let mut build = options.build_params;
                if !build.is_object() {
                    build = serde_json::json!({});
                }
                build["nbits"] = params.nbits.into();
                build["n_centroids"] = n_centroids.into();
                build["kmeans_iters"] = params.kmeans_iters.into();
                build["seed"] = params.seed.into();
                build["codec"] = format!("{:?}", params.codec).into();
                build["centroid_fit"] = centroid_fit.into();
                build["residual_scale"] = scale.into();
                build["decode_scale"] = decode_scale.to_json();
                build["token_fit"] = token_fit.into();
                build
            }
        };
        let meta = IndexMeta {
            format_version: FORMAT_VERSION,
            kind: IndexKind::Residual { nbits: params.nbits },
            dim,
            n_docs: (doc_offsets.len() - 1) as u64,
            n_tokens: *doc_offsets.last().expect("non-empty"),
            created_by: format!("colbert-index {}", env!("CARGO_PKG_VERSION")),
            residual: Some(ResidualMeta {
                n_centroids: n_centroids as u64,
                per_dim_buckets: codec.per_dim(),
                has_embeddings,
                joint_codebooks: codec.joint(),
                unit_norm,
                token_norms: unit_norm,
                warp_layout: params.warp_layout,
            }),
            encoder: options.encoder,
            build,
        };
        writer.commit(&meta)?;
        Ok(meta)
    }
}

/// A file [`CompressedBuilder::finish`] already wrote into the temporary directory, read back
/// memory-mapped (the inverted file, the norm factors and the WARP layout are derived from the
/// finished codes and residuals).
pub(super) struct WrittenFile {
    path: PathBuf,
    map: memmap2::Mmap,
    component: Component,
}

impl WrittenFile {
    /// Maps `component` of the index `writer` is writing.
    pub(super) fn open(writer: &IndexWriter, component: Component) -> Result<Self> {
        let path = writer.temp_dir().join(component.file_name());
        let file = File::open(&path).map_err(io_err(&path))?;
        let map = map_file(&file).map_err(io_err(&path))?;
        Ok(Self { path, map, component })
    }

    /// The payload, its footer checked.
    pub(super) fn payload(&self) -> Result<&[u8]> {
        Ok(Footer::split(&self.path, &self.map, self.component.id())?.0)
    }

    /// This file (`codes.rice`) as the run-coded codes of the documents `doc_offsets` delimits,
    /// with their packed `code_offsets`.
    pub(super) fn doc_codes<'a>(
        &'a self,
        code_offsets: &'a [u8],
        doc_offsets: &[u64],
        n_centroids: usize,
    ) -> Result<DocCodes<'a>> {
        let n_docs = doc_offsets.len() - 1;
        let n_tokens = *doc_offsets.last().expect("non-empty") as usize;
        DocCodes::new(self.payload()?, code_offsets, n_docs, n_tokens, n_centroids as u64)
            .map_err(|e| self.corrupt(format!("the codes just written do not fit their offsets: {e:?}")))
    }

    /// An error naming this file: what was just written does not read back.
    pub(super) fn corrupt(&self, detail: String) -> EngineError {
        EngineError::Format(index_format::FormatError::corrupt(&self.path, detail))
    }
}

/// Documents per parallel block of [`write_norms`].
const NORM_BLOCK_DOCS: usize = 1024;

/// Writes `norms.f16`: each token's inverse decoded norm, `1 / |centroid + residual|` with the
/// stored decoding tables (`decoding`), in f16 (1 for a decoded vector of norm 0, at most the
/// largest f16). Reads the finished codes and residuals back from the temporary directory
/// (memory-mapped), in parallel blocks of documents written in order.
fn write_norms(
    writer: &IndexWriter,
    doc_offsets: &[u64],
    code_offsets: &[u8],
    n_centroids: usize,
    decoding: &Codec,
    centroids: &[f32],
) -> Result<()> {
    let codes_file = WrittenFile::open(writer, Component::CodesRice)?;
    let codes = codes_file.doc_codes(code_offsets, doc_offsets, n_centroids)?;
    let residuals_file = WrittenFile::open(writer, Component::Residuals)?;
    let residuals = residuals_file.payload()?;
    let n_docs = doc_offsets.len() - 1;
    let corrupt = |detail: String| codes_file.corrupt(detail);
    let (dim, pl) = (decoding.dim(), decoding.packed_len());
    let mut out = writer.component(Component::TokenNorms)?;
    // Rounds of one block of documents per thread, written in order after each round.
    let round = NORM_BLOCK_DOCS * rayon::current_num_threads().max(1);
    for lo in (0..n_docs).step_by(round) {
        let starts: Vec<usize> = (lo..(lo + round).min(n_docs)).step_by(NORM_BLOCK_DOCS).collect();
        let norms = starts
            .par_iter()
            .map(|&first| -> Result<Vec<f16>> {
                let block = first..(first + NORM_BLOCK_DOCS).min(n_docs);
                let (mut doc_codes, mut decoded, mut norms) = (Vec::new(), Vec::new(), Vec::new());
                for doc in block {
                    let (a, b) = (doc_offsets[doc] as usize, doc_offsets[doc + 1] as usize);
                    codes
                        .tokens_into(doc, b - a, &mut doc_codes)
                        .map_err(|e| corrupt(format!("document {doc} just written does not decode: {e}")))?;
                    decoded.resize((b - a) * dim, 0f32);
                    decoding.decode_rows(
                        &residuals[a * pl..b * pl],
                        &doc_codes,
                        centroids,
                        Norm::Keep,
                        &mut decoded,
                    )?;
                    norms.extend(decoded.chunks_exact(dim).map(|x| {
                        let norm = crate::codec::dot(x, x).sqrt();
                        let inv = if norm > 0.0 { (1.0 / norm).min(f16::MAX.to_f32()) } else { 1.0 };
                        f16::from_f32(inv)
                    }));
                }
                Ok(norms)
            })
            .collect::<Result<Vec<_>>>()?;
        for n in norms {
            out.write_all(as_bytes(&n)).map_err(io_err(out.path()))?;
        }
    }
    out.finish()?;
    Ok(())
}

/// Builds the inverted file (`ivf.rice`, `ivf_bit_offsets.u64`, `ivf_rice_k.u8`) from the
/// finished codes file in the temporary directory and the packed `code_offsets`: a pass over
/// the memory-mapped codes per block of centroids whose lists together hold at most
/// [`IVF_BLOCK_ENTRIES`] documents (one pass for most indexes). Each list is Rice-coded with
/// the parameter that makes it smallest.
fn write_ivf(
    writer: &IndexWriter,
    doc_offsets: &[u64],
    code_offsets: &[u8],
    list_lens: &[u64],
) -> Result<()> {
    let codes_file = WrittenFile::open(writer, Component::CodesRice)?;
    let codes = codes_file.doc_codes(code_offsets, doc_offsets, list_lens.len())?;
    let corrupt = |detail: String| codes_file.corrupt(detail);
    let mut offsets = Vec::with_capacity(list_lens.len() + 1);
    offsets.push(0u64);
    for &l in list_lens {
        offsets.push(offsets.last().expect("non-empty") + l);
    }
    let mut out = BitWriter::new(writer.component(Component::IvfRice)?);
    let rice_path = out.get_ref().path().to_path_buf();
    let mut bit_offsets = Vec::with_capacity(list_lens.len() + 1);
    bit_offsets.push(0u64);
    let mut params: Vec<u8> = Vec::with_capacity(list_lens.len());
    let mut distinct: Vec<u32> = Vec::new();
    let mut lo = 0usize;
    while lo < list_lens.len() {
        // The block of centroids lo..hi.
        let mut hi = lo + 1;
        while hi < list_lens.len() && offsets[hi + 1] - offsets[lo] <= IVF_BLOCK_ENTRIES as u64 {
            hi += 1;
        }
        let base = offsets[lo];
        let mut block = vec![0u32; (offsets[hi] - base) as usize];
        let mut cursor: Vec<u64> = offsets[lo..hi].iter().map(|&o| o - base).collect();
        for doc in 0..doc_offsets.len() - 1 {
            let len = (doc_offsets[doc + 1] - doc_offsets[doc]) as usize;
            codes
                .distinct_into(doc, len, &mut distinct)
                .map_err(|e| corrupt(format!("document {doc} just written does not decode: {e}")))?;
            for &c in &distinct {
                let c = c as usize;
                if (lo..hi).contains(&c) {
                    block[cursor[c - lo] as usize] = doc as u32;
                    cursor[c - lo] += 1;
                }
            }
        }
        for c in lo..hi {
            let list = &block[(offsets[c] - base) as usize..(offsets[c + 1] - base) as usize];
            let (k, _) = best_rice_param(list);
            put_rice_list(&mut out, list, k).map_err(io_err(&rice_path))?;
            bit_offsets.push(out.bits());
            params.push(k as u8);
        }
        lo = hi;
    }
    out.finish().map_err(io_err(&rice_path))?.finish()?;
    writer.write_component(Component::IvfBitOffsets, as_bytes(&bit_offsets))?;
    writer.write_component(Component::IvfRiceK, &params)?;
    Ok(())
}
