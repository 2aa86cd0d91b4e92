//! The ColBERT encoder: text in, one L2-normalised vector per token out, computed on the CPU by
//! our own BERT and ModernBERT forward passes on the `kernels` crate's products (candle tensors
//! carry the inputs and outputs).
//!
//! [`Encoder::load`] recognises three model layouts (see [`config`]): Stanford ColBERT
//! (`HF_ColBERT` + `artifact.metadata`), PyLate / sentence-transformers (`modules.json`,
//! `1_Dense/`, `config_sentence_transformers.json`) and a plain BERT or ModernBERT checkpoint. The
//! ColBERT rules ([`tokenize`]) are: a marker token after `[CLS]`; queries padded with `[MASK]` to
//! the query length (attended to or not, as the model says); documents truncated to the document
//! length and their skiplist (punctuation) tokens dropped from the output; every output vector
//! L2-normalised.
//!
//! Plain mode (no ColBERT settings in the directory) uses [`ColbertSettings::plain`]: no markers, no
//! query expansion, punctuation dropped from documents, 256-token limits, no projection
//! (dim = hidden size). With all-MiniLM-L6-v2 these settings make exhaustive MaxSim a strong
//! baseline on the classic collections (figures on [`ColbertSettings::plain`]).
//!
//! Inputs are sorted by token count and batched so that padding is small; a padded batch carries an
//! attention mask, so results do not depend on batch composition.

mod bert;
pub(crate) mod checkpoint;
pub mod config;
mod layers;
pub(crate) mod model;
mod modernbert;
pub mod tokenize;

use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde_json::Value;

pub use config::{ColbertSettings, Layout};
pub use model::Architecture;
pub use tokenize::{ColbertTokenizer, TextKind, TokenizedText};

use crate::error::{EngineError, Result};
use checkpoint::Checkpoint;
use config::model_error;
use model::{Backbone, Dense};

/// Options for [`Encoder::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderOptions {
    /// Largest number of texts run through the model at once.
    pub batch_size: usize,
    /// Largest number of (padded) tokens run through the model at once; bounds memory for long
    /// documents.
    pub max_batch_tokens: usize,
    /// Overrides the model's query length.
    pub query_maxlen: Option<usize>,
    /// Overrides the model's document length.
    pub doc_maxlen: Option<usize>,
    /// Arithmetic of the backbone's matrix products (dense layers and attention; see
    /// [`Precision`]).
    pub precision: Precision,
    /// The widest kernel family the products may use (see [`KernelChoice`]).
    pub kernels: KernelChoice,
}

pub use kernels::{KernelChoice, Precision};

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            batch_size: 32,
            max_batch_tokens: 8192,
            query_maxlen: None,
            doc_maxlen: None,
            precision: Precision::F32,
            kernels: KernelChoice::Auto,
        }
    }
}

/// A loaded ColBERT encoder.
pub struct Encoder {
    layout: Layout,
    architecture: Architecture,
    name: String,
    tokenizer: ColbertTokenizer,
    backbone: Backbone,
    dense: Vec<Dense>,
    hidden: usize,
    dim: usize,
    settings: ColbertSettings,
    weights_crc32: Vec<u32>,
    options: EncoderOptions,
    precision: Precision,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("name", &self.name)
            .field("layout", &self.layout)
            .field("architecture", &self.architecture)
            .field("dim", &self.dim)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Loads the model in `dir`, detecting its layout. Errors name the file at fault: a missing or
    /// malformed file, weights that do not match `config.json`, a tokenizer whose ids exceed the
    /// model's vocabulary, or an unsupported architecture.
    pub fn load(dir: &Path, options: EncoderOptions) -> Result<Encoder> {
        if options.batch_size == 0 || options.max_batch_tokens == 0 {
            return Err(EngineError::InvalidArgument(
                "batch_size and max_batch_tokens must be positive".into(),
            ));
        }
        let mut files = config::detect(dir)?;
        if let Some(q) = options.query_maxlen {
            files.settings.query_maxlen = q;
        }
        if let Some(d) = options.doc_maxlen {
            files.settings.doc_maxlen = d;
        }
        let (info, raw) = model::backbone_info(&files.config)?;
        for (len, what) in [(files.settings.query_maxlen, "query"), (files.settings.doc_maxlen, "document")] {
            if len > info.max_positions {
                return Err(model_error(
                    &files.config,
                    format!("{what} length {len} exceeds max_position_embeddings {}", info.max_positions),
                ));
            }
        }
        let tokenizer = ColbertTokenizer::load(
            &files.tokenizer,
            files.tokenizer_config.as_deref(),
            &files.settings,
            info.vocab_size,
        )?;
        let checkpoint = Checkpoint::open(&files.weights)?;
        let mut weights_crc32 = vec![checkpoint.crc32()];
        // Projections stored with the backbone (Stanford) are read from the same file.
        let mut dense = Vec::with_capacity(files.dense.len());
        let mut width = info.hidden;
        for spec in &files.dense {
            let layer = if spec.weights == files.weights {
                Dense::from_checkpoint(spec, &checkpoint, width)?
            } else {
                let own = Checkpoint::open(&spec.weights)?;
                weights_crc32.push(own.crc32());
                Dense::from_checkpoint(spec, &own, width)?
            };
            width = layer.out_features();
            dense.push(layer);
        }
        let kernels = options.kernels.resolve()?;
        let precision = options.precision.effective(&kernels);
        let backbone = Backbone::load(&info, raw, &files.config, checkpoint, &kernels, precision)?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Encoder {
            layout: files.layout,
            architecture: info.architecture,
            name,
            tokenizer,
            backbone,
            dense,
            hidden: info.hidden,
            dim: width,
            settings: files.settings,
            weights_crc32,
            options,
            precision,
        })
    }

    /// Width of every output vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The detected layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The ColBERT rules in force.
    pub fn settings(&self) -> &ColbertSettings {
        &self.settings
    }

    /// The tokenizer with the ColBERT rules.
    pub fn tokenizer(&self) -> &ColbertTokenizer {
        &self.tokenizer
    }

    /// [`Encoder::identity`] plus where the model was loaded from (`model_dir`, made absolute
    /// where possible) and the documents' precision: what an index built with this encoder
    /// records, so that its queries are later encoded the same way.
    pub fn recorded_identity(&self, model_dir: &Path) -> Value {
        let mut id = self.identity();
        let dir = model_dir.canonicalize().unwrap_or_else(|_| model_dir.to_path_buf());
        id["model_dir"] = dir.display().to_string().into();
        id["document_precision"] = Value::from(self.precision().name());
        id
    }

    /// A JSON description to record in an index: enough to re-create the encoder (name, layout,
    /// settings) and to detect a different model at search time (dimensions, skiplist ids and the
    /// CRC-32 of the weight files).
    pub fn identity(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "layout": self.layout.name(),
            "architecture": self.architecture,
            "hidden_size": self.hidden,
            "dim": self.dim,
            "query_maxlen": self.settings.query_maxlen,
            "doc_maxlen": self.settings.doc_maxlen,
            "query_marker": self.settings.query_marker,
            "doc_marker": self.settings.doc_marker,
            "expand_queries": self.settings.expand_queries,
            "attend_to_expansion": self.settings.attend_to_expansion,
            "skiplist_ids": self.tokenizer.skiplist_ids(),
            "normalized": true,
            "weights_crc32": self.weights_crc32,
        })
    }

    /// Checks that `recorded` (an earlier [`Encoder::identity`]) describes this encoder: every
    /// field but the name must match.
    pub fn check_identity(&self, recorded: &Value) -> Result<()> {
        let mine = self.identity();
        let (Some(mine), Some(theirs)) = (mine.as_object(), recorded.as_object()) else {
            return Err(EngineError::InvalidArgument("encoder identity is not a JSON object".into()));
        };
        for (key, value) in mine.iter().filter(|(k, _)| k.as_str() != "name") {
            if theirs.get(key) != Some(value) {
                return Err(EngineError::InvalidArgument(format!(
                    "encoder mismatch on {key:?}: the index records {}, the loaded model has {value}",
                    theirs.get(key).map_or_else(|| "nothing".to_string(), Value::to_string)
                )));
            }
        }
        Ok(())
    }

    /// Encodes queries: each result is `[len × dim]` row-major, `len` = the query length when the
    /// model expands queries.
    pub fn encode_queries(&self, queries: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.encode(queries, TextKind::Query)
    }

    /// The arithmetic the dense layers actually run in (never `Auto`).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// What runs the model's matrix products on this CPU, in words: `"bf16 (AMX tiles)"`,
    /// `"bf16 (AVX-512 BF16)"`, `"f32 (AVX-512 panels)"` or `"f32 (gemm)"`.
    pub fn kernel(&self) -> &'static str {
        self.backbone.kernel_name()
    }

    /// Encodes documents: each result is `[tokens × dim]` row-major, skiplist tokens dropped.
    pub fn encode_documents(&self, documents: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.encode(documents, TextKind::Document)
    }

    /// Tokenises, batches by length, runs the model and gathers the kept, normalised rows.
    pub fn encode(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let tokenized: Vec<TokenizedText> =
            texts.par_iter().map(|t| self.tokenizer.tokenize(t, kind)).collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..tokenized.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokenized[i].ids.len()));
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            // Sorted longest first, so the first text of a batch sets its padded length.
            let len = tokenized[order[start]].ids.len();
            let fit = (self.options.max_batch_tokens / len.max(1)).max(1);
            let end = (start + self.options.batch_size.min(fit)).min(order.len());
            batches.push(&order[start..end]);
            start = end;
        }
        // Batches run concurrently, each on one thread from start to finish; with fewer batches
        // than threads (one query searched interactively) each splits its large products with a
        // second thread instead.
        let threads = if batches.len() < rayon::current_num_threads() {
            model::Threads::Two
        } else {
            model::Threads::One
        };
        let results: Vec<Vec<Vec<f32>>> = batches
            .par_iter()
            .map(|batch| self.run_batch(batch.iter().map(|&i| &tokenized[i]).collect(), threads))
            .collect::<Result<_>>()?;
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for (batch, rows) in batches.iter().zip(results) {
            for (&i, r) in batch.iter().zip(rows) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn run_batch(&self, batch: Vec<&TokenizedText>, threads: model::Threads) -> Result<Vec<Vec<f32>>> {
        let len = batch.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let n = batch.len();
        let mut ids = vec![0u32; n * len];
        let mut attention = vec![0u32; n * len];
        for (b, t) in batch.iter().enumerate() {
            ids[b * len..b * len + t.ids.len()].copy_from_slice(&t.ids);
            attention[b * len..b * len + t.attention.len()].copy_from_slice(&t.attention);
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &dev)?;
        let attention = Tensor::from_vec(attention, (n, len), &dev)?;
        let mut xs = self.backbone.forward(&ids, &attention, threads)?;
        for layer in &self.dense {
            xs = layer.forward(&xs)?;
        }
        let xs = model::l2_normalize(&xs)?;
        let flat: Vec<f32> = xs.flatten_all()?.to_vec1()?;
        let dim = self.dim;
        Ok(batch
            .iter()
            .enumerate()
            .map(|(b, t)| {
                let base = b * len * dim;
                let mut v = Vec::with_capacity(t.keep.iter().filter(|k| **k).count() * dim);
                for (pos, _) in t.keep.iter().enumerate().filter(|(_, k)| **k) {
                    v.extend_from_slice(&flat[base + pos * dim..base + (pos + 1) * dim]);
                }
                v
            })
            .collect())
    }
}
