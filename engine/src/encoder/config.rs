//! Model directory detection: which layout a directory holds, where its files are, and the ColBERT
//! settings each layout records.
//!
//! Three layouts are recognised, checked in this order:
//!
//! 1. **PyLate** (sentence-transformers): `modules.json` lists a `Transformer` module and `Dense`
//!    projections, and `config_sentence_transformers.json` carries the ColBERT keys (`query_prefix`,
//!    `document_prefix`, `query_length`, `document_length`, `attend_to_expansion_tokens`,
//!    `skiplist_words`, `do_query_expansion`).
//! 2. **Stanford** (`HF_ColBERT`): `config.json` names the `HF_ColBERT` architecture or an
//!    `artifact.metadata` sits next to it; the weights hold the backbone (often prefixed `bert.`)
//!    and the projection `linear.weight` (hidden → dim, no bias).
//! 3. **Plain**: any BERT or ModernBERT checkpoint, including a sentence-transformers model whose
//!    `modules.json` only pools; no projection, no markers, no query expansion.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{EngineError, Result};

/// The layout of a model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Stanford ColBERT / `HF_ColBERT`: backbone and `linear` in one weights file, settings in
    /// `artifact.metadata`.
    Stanford,
    /// PyLate / sentence-transformers: `modules.json`, `N_Dense/` projections and
    /// `config_sentence_transformers.json`.
    Pylate,
    /// A plain BERT or ModernBERT encoder with no projection and no ColBERT settings.
    Plain,
}

impl Layout {
    /// The layout's name as recorded in an encoder identity.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Stanford => "stanford",
            Layout::Pylate => "pylate",
            Layout::Plain => "plain",
        }
    }
}

/// The ColBERT tokenisation rules of a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColbertSettings {
    /// Length of an encoded query in tokens, special tokens and marker included; longer queries are
    /// truncated, shorter ones padded with the mask token when `expand_queries` is set.
    pub query_maxlen: usize,
    /// Maximum length of an encoded document in tokens, special tokens and marker included.
    pub doc_maxlen: usize,
    /// Marker token inserted after the leading special token of every query (`[unused0]`, `[Q] `).
    pub query_marker: Option<String>,
    /// Marker token inserted after the leading special token of every document.
    pub doc_marker: Option<String>,
    /// Pad queries with the mask token up to `query_maxlen` (ColBERT query augmentation).
    pub expand_queries: bool,
    /// Whether the other tokens attend to the mask tokens that pad a query.
    pub attend_to_expansion: bool,
    /// Words whose tokens are dropped from stored document embeddings (punctuation by default).
    pub skiplist_words: Vec<String>,
}

/// ASCII punctuation, the default skiplist of both Stanford ColBERT and PyLate.
pub const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn punctuation_words() -> Vec<String> {
    PUNCTUATION.chars().map(String::from).collect()
}

impl ColbertSettings {
    /// Settings for a plain encoder: no markers, no query expansion, punctuation dropped from
    /// documents, documents truncated at 256 tokens and queries at 256 tokens. With
    /// all-MiniLM-L6-v2, exhaustive MaxSim under these settings scores nDCG@10 0.385 on
    /// Cranfield, 0.452 on CISI and 0.499 on NPL (reference figures computed with PyTorch).
    pub fn plain() -> Self {
        ColbertSettings {
            query_maxlen: 256,
            doc_maxlen: 256,
            query_marker: None,
            doc_marker: None,
            expand_queries: false,
            attend_to_expansion: false,
            skiplist_words: punctuation_words(),
        }
    }
}

/// Activation applied after a dense projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// No activation.
    Identity,
    /// Hyperbolic tangent (the sentence-transformers `Dense` default).
    Tanh,
}

/// One projection layer: where its weights are and how to apply them.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseSpec {
    /// The weights file.
    pub weights: PathBuf,
    /// Tensor name prefix inside the weights file (`linear` gives `linear.weight`).
    pub prefix: String,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Whether a `bias` tensor is present.
    pub bias: bool,
    /// Activation after the affine map.
    pub activation: Activation,
}

/// Everything needed to build an encoder from a directory, before any weight is read.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The directory given by the user.
    pub root: PathBuf,
    /// The detected layout.
    pub layout: Layout,
    /// The backbone's `config.json`.
    pub config: PathBuf,
    /// The backbone's weights (`model.safetensors` or `pytorch_model.bin`).
    pub weights: PathBuf,
    /// The tokenizer: a `tokenizer.json` or a WordPiece `vocab.txt`.
    pub tokenizer: PathBuf,
    /// `tokenizer_config.json` next to the tokenizer, if any (mask token, lower-casing).
    pub tokenizer_config: Option<PathBuf>,
    /// Projection layers applied in order to every token's hidden state.
    pub dense: Vec<DenseSpec>,
    /// ColBERT rules.
    pub settings: ColbertSettings,
}

pub(crate) fn model_error(path: &Path, problem: impl Into<String>) -> EngineError {
    EngineError::Model { path: path.to_path_buf(), problem: problem.into() }
}

/// Reads and parses a JSON file, naming it in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| model_error(path, format!("malformed JSON: {e}")))
}

/// One entry of a sentence-transformers `modules.json`.
#[derive(Debug, Deserialize)]
struct StModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The keys of a `1_Dense/config.json` that matter here.
#[derive(Debug, Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "default_true")]
    bias: bool,
    #[serde(default)]
    activation_function: Option<String>,
}

fn default_true() -> bool {
    true
}

/// The subset of `artifact.metadata` (a Stanford `ColBERTConfig` dump) used for encoding.
#[derive(Debug, Default, Deserialize)]
struct ArtifactMetadata {
    query_maxlen: Option<usize>,
    doc_maxlen: Option<usize>,
    mask_punctuation: Option<bool>,
    attend_to_mask_tokens: Option<bool>,
    query_token_id: Option<String>,
    doc_token_id: Option<String>,
    dim: Option<usize>,
}

/// The ColBERT keys of a PyLate `config_sentence_transformers.json`.
#[derive(Debug, Default, Deserialize)]
struct PylateConfig {
    query_prefix: Option<String>,
    document_prefix: Option<String>,
    query_length: Option<usize>,
    document_length: Option<usize>,
    attend_to_expansion_tokens: Option<bool>,
    skiplist_words: Option<Vec<String>>,
    do_query_expansion: Option<bool>,
}

impl PylateConfig {
    fn is_colbert(&self) -> bool {
        self.query_prefix.is_some()
            || self.document_prefix.is_some()
            || self.query_length.is_some()
            || self.document_length.is_some()
    }
}

/// Finds the weights file of a module directory: `model.safetensors`, else `pytorch_model.bin`.
fn find_weights(dir: &Path) -> Result<PathBuf> {
    let st = dir.join("model.safetensors");
    if st.is_file() {
        return Ok(st);
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok(bin);
    }
    Err(model_error(dir, "no model.safetensors (or pytorch_model.bin) in the model directory"))
}

/// Finds the tokenizer: `tokenizer.json`, else `vocab.txt`, in `dir` then in `root`.
fn find_tokenizer(dir: &Path, root: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    for d in [dir, root] {
        for name in ["tokenizer.json", "vocab.txt"] {
            let p = d.join(name);
            if p.is_file() {
                let cfg = d.join("tokenizer_config.json");
                return Ok((p, cfg.is_file().then_some(cfg)));
            }
        }
    }
    Err(model_error(dir, "no tokenizer.json or vocab.txt in the model directory"))
}

fn parse_activation(path: &Path, name: Option<&str>) -> Result<Activation> {
    match name {
        None => Ok(Activation::Identity),
        Some(n) if n.ends_with("Identity") => Ok(Activation::Identity),
        Some(n) if n.ends_with("Tanh") => Ok(Activation::Tanh),
        Some(n) => Err(model_error(path, format!("unsupported dense activation function {n:?}"))),
    }
}

/// Inspects `dir` and returns its layout, files and settings. Reads only small JSON files.
pub fn detect(dir: &Path) -> Result<ModelFiles> {
    if !dir.is_dir() {
        return Err(model_error(dir, "model directory not found"));
    }
    let modules_path = dir.join("modules.json");
    let st_config_path = dir.join("config_sentence_transformers.json");
    if modules_path.is_file() && st_config_path.is_file() {
        let pylate: PylateConfig = read_json(&st_config_path)?;
        if pylate.is_colbert() {
            return detect_pylate(dir, &modules_path, &st_config_path, pylate);
        }
    }
    let (backbone_dir, _) = transformer_dir(dir, &modules_path)?;
    let config = backbone_dir.join("config.json");
    if !config.is_file() {
        return Err(model_error(&config, "config.json not found"));
    }
    let metadata_path = dir.join("artifact.metadata");
    let raw: Value = read_json(&config)?;
    let hf_colbert = raw
        .get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("HF_ColBERT")));
    let weights = find_weights(&backbone_dir)?;
    let (tokenizer, tokenizer_config) = find_tokenizer(&backbone_dir, dir)?;
    if hf_colbert || metadata_path.is_file() {
        let meta: ArtifactMetadata =
            if metadata_path.is_file() { read_json(&metadata_path)? } else { ArtifactMetadata::default() };
        let hidden = raw.get("hidden_size").and_then(Value::as_u64).unwrap_or(0) as usize;
        let dim = meta.dim.unwrap_or(128);
        let settings = ColbertSettings {
            query_maxlen: meta.query_maxlen.unwrap_or(32),
            doc_maxlen: meta.doc_maxlen.unwrap_or(180),
            query_marker: Some(meta.query_token_id.unwrap_or_else(|| "[unused0]".into())),
            doc_marker: Some(meta.doc_token_id.unwrap_or_else(|| "[unused1]".into())),
            expand_queries: true,
            attend_to_expansion: meta.attend_to_mask_tokens.unwrap_or(false),
            skiplist_words: if meta.mask_punctuation.unwrap_or(true) {
                punctuation_words()
            } else {
                Vec::new()
            },
        };
        let dense = vec![DenseSpec {
            weights: weights.clone(),
            prefix: "linear".into(),
            in_features: hidden,
            out_features: dim,
            bias: false,
            activation: Activation::Identity,
        }];
        return Ok(ModelFiles {
            root: dir.to_path_buf(),
            layout: Layout::Stanford,
            config,
            weights,
            tokenizer,
            tokenizer_config,
            dense,
            settings,
        });
    }
    Ok(ModelFiles {
        root: dir.to_path_buf(),
        layout: Layout::Plain,
        config,
        weights,
        tokenizer,
        tokenizer_config,
        dense: Vec::new(),
        settings: ColbertSettings::plain(),
    })
}

/// The directory of the sentence-transformers `Transformer` module (the root when there is no
/// `modules.json`), and the parsed module list.
fn transformer_dir(dir: &Path, modules_path: &Path) -> Result<(PathBuf, Vec<StModule>)> {
    if !modules_path.is_file() {
        return Ok((dir.to_path_buf(), Vec::new()));
    }
    let modules: Vec<StModule> = read_json(modules_path)?;
    let transformer = modules
        .iter()
        .find(|m| m.kind.ends_with("Transformer"))
        .ok_or_else(|| model_error(modules_path, "no Transformer module listed"))?;
    Ok((dir.join(&transformer.path), modules))
}

fn detect_pylate(dir: &Path, modules_path: &Path, st_config: &Path, cfg: PylateConfig) -> Result<ModelFiles> {
    let (backbone_dir, modules) = transformer_dir(dir, modules_path)?;
    let config = backbone_dir.join("config.json");
    if !config.is_file() {
        return Err(model_error(&config, "config.json not found"));
    }
    let weights = find_weights(&backbone_dir)?;
    let (tokenizer, tokenizer_config) = find_tokenizer(&backbone_dir, dir)?;
    let mut dense = Vec::new();
    for m in modules.iter().filter(|m| m.kind.ends_with("Dense")) {
        let mdir = dir.join(&m.path);
        let cfg_path = mdir.join("config.json");
        let dc: DenseConfig = read_json(&cfg_path)?;
        dense.push(DenseSpec {
            weights: find_weights(&mdir)?,
            prefix: "linear".into(),
            in_features: dc.in_features,
            out_features: dc.out_features,
            bias: dc.bias,
            activation: parse_activation(&cfg_path, dc.activation_function.as_deref())?,
        });
    }
    if let Some(m) = modules.iter().find(|m| {
        !(m.kind.ends_with("Dense") || m.kind.ends_with("Transformer") || m.kind.ends_with("Normalize"))
    }) {
        return Err(model_error(modules_path, format!("unsupported module {:?} in a ColBERT model", m.kind)));
    }
    let expand = cfg.do_query_expansion.unwrap_or(true);
    let non_empty = |s: Option<String>, default: &str| -> Option<String> {
        let s = s.unwrap_or_else(|| default.to_string());
        (!s.is_empty()).then_some(s)
    };
    let settings = ColbertSettings {
        query_maxlen: cfg.query_length.unwrap_or(32),
        doc_maxlen: cfg.document_length.unwrap_or(180),
        query_marker: non_empty(cfg.query_prefix, "[Q] "),
        doc_marker: non_empty(cfg.document_prefix, "[D] "),
        expand_queries: expand,
        attend_to_expansion: expand && cfg.attend_to_expansion_tokens.unwrap_or(false),
        skiplist_words: cfg.skiplist_words.unwrap_or_else(punctuation_words),
    };
    if settings.query_maxlen < 3 || settings.doc_maxlen < 3 {
        return Err(model_error(st_config, "query_length and document_length must be at least 3"));
    }
    Ok(ModelFiles {
        root: dir.to_path_buf(),
        layout: Layout::Pylate,
        config,
        weights,
        tokenizer,
        tokenizer_config,
        dense,
        settings,
    })
}
