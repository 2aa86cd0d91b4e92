//! A cross-encoder reranker: HF `BertForSequenceClassification` checkpoints with one output
//! (the ms-marco-MiniLM cross-encoders' layout), run on the CPU by the encoder's BERT backbone.
//!
//! A pair is tokenised as `[CLS] query [SEP] document [SEP]` with token type ids 0 for the query
//! part and 1 for the document part, by the checkpoint's own `tokenizer.json` post-processor.
//! Pairs longer than `max_length` are truncated **longest first** (one token at a time from the
//! longer side; transformers' `truncation=True`, which is what sentence-transformers'
//! `CrossEncoder` uses, so scores match how these models are normally run). A long query is
//! therefore shortened too, unlike `only_second`, which would fail on queries longer than the
//! limit.
//!
//! The score is the classifier's logit on the pooled `[CLS]` state:
//! `classifier(tanh(pooler.dense(h[CLS])))` (transformers' `BertPooler` then the linear head;
//! no sigmoid, since it does not change the order).
//!
//! Other architectures (e.g. `XLMRobertaForSequenceClassification`, bge-reranker-base) are refused
//! with an error naming them.

use std::path::{Path, PathBuf};

use candle_core::{Device, IndexOp, Tensor};
use rayon::prelude::*;
use serde_json::Value;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::{Candidate, Reranker, Scored};
use crate::encoder::checkpoint::Checkpoint;
use crate::encoder::config::{model_error, read_json};
use crate::encoder::model::{backbone_info, Architecture, Backbone, Threads};
use crate::encoder::{KernelChoice, Precision};
use crate::error::{EngineError, Result};

/// The architecture this module loads.
const SUPPORTED: &str = "BertForSequenceClassification";

/// Options for [`CrossEncoder::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossEncoderOptions {
    /// Longest pair in tokens, special tokens included (default: the tokenizer's
    /// `model_max_length`, at most `max_position_embeddings`).
    pub max_length: Option<usize>,
    /// Largest number of pairs run through the model at once.
    pub batch_size: usize,
    /// Largest number of (padded) tokens run through the model at once.
    pub max_batch_tokens: usize,
    /// Arithmetic of the BERT dense layers (f32 matches PyTorch within 1e-4; bf16 is about
    /// twice as fast on CPUs with AVX-512 BF16).
    pub precision: Precision,
    /// The widest kernel family the products may use.
    pub kernels: KernelChoice,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        CrossEncoderOptions {
            max_length: None,
            batch_size: 16,
            max_batch_tokens: 8192,
            precision: Precision::F32,
            kernels: KernelChoice::Auto,
        }
    }
}

/// A linear layer `y = x Wᵀ + b` taken from a checkpoint.
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    fn read(checkpoint: &Checkpoint, prefix: &str, shape: (usize, usize)) -> Result<Self> {
        let path = checkpoint.path();
        let get = |name: &str, want: &[usize]| -> Result<Tensor> {
            let key = format!("{prefix}.{name}");
            let t =
                checkpoint.tensor(&key)?.ok_or_else(|| model_error(path, format!("no tensor {key:?}")))?;
            if t.dims() != want {
                return Err(model_error(
                    path,
                    format!("{key:?} has shape {:?}, expected {want:?}", t.dims()),
                ));
            }
            Ok(t)
        };
        let weight = get("weight", &[shape.0, shape.1])?;
        let bias = get("bias", &[shape.0])?;
        Ok(Linear { weight_t: weight.t()?.contiguous()?, bias })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// A loaded cross-encoder.
pub struct CrossEncoder {
    dir: PathBuf,
    tokenizer: Tokenizer,
    backbone: Backbone,
    pooler: Linear,
    classifier: Linear,
    max_length: usize,
    options: CrossEncoderOptions,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("dir", &self.dir)
            .field("max_length", &self.max_length)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The architectures a config names, or its model type.
fn named_architecture(raw: &Value) -> String {
    let archs: Vec<&str> = raw
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if archs.is_empty() {
        raw.get("model_type").and_then(Value::as_str).unwrap_or("unknown").to_string()
    } else {
        archs.join(", ")
    }
}

/// Number of outputs of the classification head, from `num_labels` or `id2label`.
fn num_labels(raw: &Value) -> usize {
    raw.get("num_labels")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| raw.get("id2label").and_then(Value::as_object).map(|m| m.len()))
        .unwrap_or(2)
}

/// The tokenizer's own length limit, ignoring the "unlimited" sentinel (1e30) some configs hold.
fn tokenizer_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let raw: Value = read_json(&path)?;
    Ok(raw
        .get("model_max_length")
        .and_then(Value::as_f64)
        .filter(|m| (1.0..1e9).contains(m))
        .map(|m| m as usize))
}

impl CrossEncoder {
    /// Loads a `BertForSequenceClassification` checkpoint (`config.json`, `model.safetensors` or
    /// `pytorch_model.bin`, `tokenizer.json`) from `dir`. Errors name the file at fault: a missing
    /// file, an unsupported architecture, a head with more than one output, tensors that do not
    /// match the configuration.
    pub fn load(dir: &Path, options: CrossEncoderOptions) -> Result<Self> {
        if options.batch_size == 0 || options.max_batch_tokens == 0 {
            return Err(EngineError::InvalidArgument(
                "cross-encoder batch_size and max_batch_tokens must be positive".into(),
            ));
        }
        if !dir.is_dir() {
            return Err(model_error(dir, "not a directory (expected a cross-encoder checkpoint)"));
        }
        let config_path = dir.join("config.json");
        let raw: Value = read_json(&config_path)?;
        let named = named_architecture(&raw);
        if !named.split(", ").any(|a| a == SUPPORTED) {
            return Err(model_error(
                &config_path,
                format!("unsupported cross-encoder architecture {named:?}: only {SUPPORTED} checkpoints are supported"),
            ));
        }
        let labels = num_labels(&raw);
        if labels != 1 {
            return Err(model_error(
                &config_path,
                format!(
                    "the classification head has {labels} labels; a cross-encoder reranker needs exactly 1"
                ),
            ));
        }
        let (info, raw) = backbone_info(&config_path)?;
        if info.architecture != Architecture::Bert {
            return Err(model_error(&config_path, format!("{SUPPORTED} must have a BERT backbone")));
        }
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| model_error(dir, "no model.safetensors or pytorch_model.bin"))?;
        let checkpoint = Checkpoint::open(&weights)?;
        let h = info.hidden;
        let pooler = Linear::read(&checkpoint, "bert.pooler.dense", (h, h))?;
        let classifier = Linear::read(&checkpoint, "classifier", (1, h))?;
        let kernels = options.kernels.resolve()?;
        let precision = options.precision.effective(&kernels);
        let backbone = Backbone::load(&info, raw, &config_path, checkpoint, &kernels, precision)?;

        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(model_error(&tok_path, "missing (the cross-encoder needs its tokenizer.json)"));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| model_error(&tok_path, format!("unreadable tokenizer: {e}")))?;
        let max_length = match options.max_length {
            Some(m) => m,
            None => tokenizer_max_length(dir)?.unwrap_or(info.max_positions).min(info.max_positions),
        };
        if max_length < 4 || max_length > info.max_positions {
            return Err(model_error(
                &config_path,
                format!(
                    "max_length {max_length} must be between 4 and max_position_embeddings {}",
                    info.max_positions
                ),
            ));
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| model_error(&tok_path, format!("cannot set truncation: {e}")))?;
        let max_id = tokenizer.get_vocab(true).values().copied().max().unwrap_or(0);
        if max_id as usize >= info.vocab_size {
            return Err(model_error(
                &tok_path,
                format!("token id {max_id} is outside the model's vocabulary of {}", info.vocab_size),
            ));
        }
        Ok(CrossEncoder {
            dir: dir.to_path_buf(),
            tokenizer,
            backbone,
            pooler,
            classifier,
            max_length,
            options,
        })
    }

    /// The longest pair in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids and token type ids of one pair, as fed to the model.
    pub fn tokenize_pair(&self, query: &str, document: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let enc = self
            .tokenizer
            .encode((query, document), true)
            .map_err(|e| EngineError::Tokenize { problem: e.to_string() })?;
        Ok((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()))
    }

    /// The logit of each `(query, document)` pair. Pairs are sorted by length and run in batches
    /// concurrently on all cores; a padded batch carries an attention mask, so a score does not
    /// depend on the other pairs.
    pub fn score_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        let tokenized: Vec<(Vec<u32>, Vec<u32>)> =
            pairs.par_iter().map(|(q, d)| self.tokenize_pair(q, d)).collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..tokenized.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokenized[i].0.len()));
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let len = tokenized[order[start]].0.len();
            let fit = (self.options.max_batch_tokens / len.max(1)).max(1);
            let end = (start + self.options.batch_size.min(fit)).min(order.len());
            batches.push(&order[start..end]);
            start = end;
        }
        // Fewer batches than threads (a short rerank list): each batch splits its large products
        // with a second thread, as the encoder does for a lone query.
        let threads = if batches.len() < rayon::current_num_threads() { Threads::Two } else { Threads::One };
        let results: Vec<Vec<f32>> = batches
            .par_iter()
            .map(|batch| self.run_batch(batch.iter().map(|&i| &tokenized[i]).collect(), threads))
            .collect::<Result<_>>()?;
        let mut out = vec![0f32; pairs.len()];
        for (batch, scores) in batches.iter().zip(results) {
            for (&i, s) in batch.iter().zip(scores) {
                out[i] = s;
            }
        }
        Ok(out)
    }

    /// The logit of `query` against each document.
    pub fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
        self.score_pairs(&pairs)
    }

    fn run_batch(&self, batch: Vec<&(Vec<u32>, Vec<u32>)>, threads: Threads) -> Result<Vec<f32>> {
        let len = batch.iter().map(|t| t.0.len()).max().unwrap_or(0);
        let n = batch.len();
        let mut ids = vec![0u32; n * len];
        let mut types = vec![0u32; n * len];
        let mut attention = vec![0u32; n * len];
        for (b, (tok, ty)) in batch.iter().map(|t| (&t.0, &t.1)).enumerate() {
            ids[b * len..b * len + tok.len()].copy_from_slice(tok);
            types[b * len..b * len + ty.len()].copy_from_slice(ty);
            attention[b * len..b * len + tok.len()].fill(1);
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &dev)?;
        let types = Tensor::from_vec(types, (n, len), &dev)?;
        let attention = Tensor::from_vec(attention, (n, len), &dev)?;
        let hidden = self.backbone.forward_with_types(&ids, Some(&types), &attention, threads)?;
        let cls = hidden.i((.., 0, ..))?.contiguous()?;
        let pooled = self.pooler.forward(&cls)?.tanh()?;
        let logits = self.classifier.forward(&pooled)?;
        Ok(logits.flatten_all()?.to_vec1()?)
    }
}

impl Reranker for CrossEncoder {
    fn name(&self) -> &str {
        "cross-encoder"
    }

    /// Scores every candidate and sorts by logit, best first; equal logits keep the previous
    /// stage's order.
    fn rerank(&self, query: &str, candidates: &[Candidate]) -> Result<Vec<Scored>> {
        let docs: Vec<&str> = candidates.iter().map(|c| c.text.as_str()).collect();
        let scores = self.score(query, &docs)?;
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        Ok(order.into_iter().map(|i| Scored { id: candidates[i].id.clone(), score: scores[i] }).collect())
    }
}
