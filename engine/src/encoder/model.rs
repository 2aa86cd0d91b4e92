//! The transformer backbones (our BERT and ModernBERT forward passes) and the projection layers.

use std::path::Path;

use candle_core::{Tensor, D};

use super::bert::Bert;
use super::checkpoint::Checkpoint;
pub(crate) use super::layers::Threads;
use super::modernbert::ModernBert;
use serde_json::Value;

use super::config::{model_error, read_json, Activation, DenseSpec};
use crate::error::Result;

/// The backbone family, as named in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// BERT (and its distillations: MiniLM, the Stanford and answer.ai ColBERTs).
    Bert,
    /// ModernBERT (GTE-ModernColBERT).
    ModernBert,
}

/// A loaded backbone.
pub(crate) enum Backbone {
    Bert(Bert),
    ModernBert(ModernBert),
}

/// The backbone's shape facts read from `config.json`.
pub(crate) struct BackboneInfo {
    pub architecture: Architecture,
    pub hidden: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
}

fn architecture_of(config_path: &Path, raw: &Value) -> Result<Architecture> {
    let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
    let archs: Vec<&str> = raw
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match model_type {
        "bert" => return Ok(Architecture::Bert),
        "modernbert" => return Ok(Architecture::ModernBert),
        _ => {}
    }
    if archs.iter().any(|a| a.starts_with("ModernBert")) {
        return Ok(Architecture::ModernBert);
    }
    if archs.iter().any(|a| a.starts_with("Bert") || *a == "HF_ColBERT") {
        return Ok(Architecture::Bert);
    }
    let named = if model_type.is_empty() { archs.join(", ") } else { model_type.to_string() };
    Err(model_error(
        config_path,
        format!("unsupported architecture {named:?}: only BERT and ModernBERT backbones are supported"),
    ))
}

/// Reads `config.json` far enough to know the architecture and sizes.
pub(crate) fn backbone_info(config_path: &Path) -> Result<(BackboneInfo, Value)> {
    let raw: Value = read_json(config_path)?;
    let architecture = architecture_of(config_path, &raw)?;
    let get = |k: &str| {
        raw.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| model_error(config_path, format!("missing or non-integer {k:?}")))
    };
    let info = BackboneInfo {
        architecture,
        hidden: get("hidden_size")?,
        vocab_size: get("vocab_size")?,
        max_positions: get("max_position_embeddings")?,
    };
    Ok((info, raw))
}

impl Backbone {
    /// Builds the backbone from its parsed config and its tensors.
    pub(crate) fn load(
        info: &BackboneInfo,
        raw: Value,
        config_path: &Path,
        mut checkpoint: Checkpoint,
        kernels: &kernels::Kernels,
        precision: super::Precision,
    ) -> Result<Self> {
        let kernel = super::layers::Kernel::choose(kernels, precision);
        match info.architecture {
            Architecture::Bert => {
                checkpoint
                    .strip_prefix("embeddings.word_embeddings.weight", &["bert.", "model.", "encoder."]);
                Ok(Backbone::Bert(Bert::load(config_path, &raw, &checkpoint, kernel)?))
            }
            Architecture::ModernBert => {
                // `ModernBertForMaskedLM` keeps the backbone under `model.`; a bare
                // `ModernBertModel` (what sentence-transformers saves) has no prefix.
                checkpoint.strip_prefix("embeddings.tok_embeddings.weight", &["model.", "modernbert."]);
                Ok(Backbone::ModernBert(ModernBert::load(config_path, &raw, &checkpoint, kernel)?))
            }
        }
    }

    /// What runs the matrix products, in words (for logs and benchmark lines).
    pub(crate) fn kernel_name(&self) -> &'static str {
        match self {
            Backbone::Bert(b) => b.kernel_name(),
            Backbone::ModernBert(m) => m.kernel_name(),
        }
    }

    /// Runs the backbone: `ids` and `attention` are `[batch, len]` u32; returns `[batch, len, hidden]`.
    /// With [`Threads::Two`] the large products are split with one more thread (for a batch that
    /// runs alone).
    pub(crate) fn forward(
        &self,
        ids: &Tensor,
        attention: &Tensor,
        threads: Threads,
    ) -> candle_core::Result<Tensor> {
        self.forward_with_types(ids, None, attention, threads)
    }

    /// As [`Backbone::forward`], with BERT token type (segment) ids, `[batch, len]` u32, for
    /// sentence pairs (`None` means all zeros). ModernBERT has no segments and ignores them.
    pub(crate) fn forward_with_types(
        &self,
        ids: &Tensor,
        type_ids: Option<&Tensor>,
        attention: &Tensor,
        threads: Threads,
    ) -> candle_core::Result<Tensor> {
        let (n, len) = ids.dims2()?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<u32>();
        let msg = |e: crate::error::EngineError| candle_core::Error::Msg(e.to_string());
        match self {
            Backbone::Bert(m) => {
                let types = type_ids.map(flat).transpose()?;
                let out = m
                    .forward(&flat(ids)?, types.as_deref(), &flat(attention)?, n, len, threads)
                    .map_err(msg)?;
                Tensor::from_vec(out, (n, len, m.hidden()), ids.device())
            }
            Backbone::ModernBert(m) => {
                let out = m.forward(&flat(ids)?, &flat(attention)?, n, len, threads).map_err(msg)?;
                Tensor::from_vec(out, (n, len, m.hidden()), ids.device())
            }
        }
    }
}

/// A projection layer applied to every token.
pub(crate) struct Dense {
    weight_t: Tensor,
    bias: Option<Tensor>,
    activation: Activation,
}

impl Dense {
    /// Takes the layer's tensors out of a weights file and checks their shapes.
    pub(crate) fn from_checkpoint(
        spec: &DenseSpec,
        checkpoint: &Checkpoint,
        in_features: usize,
    ) -> Result<Self> {
        let path = spec.weights.as_path();
        let wname = format!("{}.weight", spec.prefix);
        let weight = checkpoint
            .tensor(&wname)?
            .ok_or_else(|| model_error(path, format!("no projection tensor {wname:?}")))?;
        let (out, inp) = weight
            .dims2()
            .map_err(|_| model_error(path, format!("{wname:?} is not a matrix: {:?}", weight.shape())))?;
        if inp != in_features || (spec.in_features != 0 && spec.in_features != inp) {
            return Err(model_error(
                path,
                format!("{wname:?} has shape [{out}, {inp}] but its input is {in_features} wide"),
            ));
        }
        if spec.out_features != 0 && spec.out_features != out {
            return Err(model_error(
                path,
                format!("{wname:?} has {out} outputs but the configuration says {}", spec.out_features),
            ));
        }
        let bias = if spec.bias {
            let bname = format!("{}.bias", spec.prefix);
            let b = checkpoint
                .tensor(&bname)?
                .ok_or_else(|| model_error(path, format!("no projection bias {bname:?}")))?;
            if b.dims() != [out] {
                return Err(model_error(
                    path,
                    format!("{bname:?} has shape {:?}, expected [{out}]", b.shape()),
                ));
            }
            Some(b)
        } else {
            None
        };
        Ok(Dense { weight_t: weight.t()?.contiguous()?, bias, activation: spec.activation })
    }

    /// Output width.
    pub(crate) fn out_features(&self) -> usize {
        self.weight_t.dims()[1]
    }

    /// Applies the layer to `[batch, len, in]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = xs.broadcast_matmul(&self.weight_t)?;
        let ys = match &self.bias {
            Some(b) => ys.broadcast_add(b)?,
            None => ys,
        };
        match self.activation {
            Activation::Identity => Ok(ys),
            Activation::Tanh => ys.tanh(),
        }
    }
}

/// L2-normalises the last dimension, as `torch.nn.functional.normalize` (norms clamped at 1e-12).
pub(crate) fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    xs.broadcast_div(&norms)
}
