//! A local chat model from one GGUF file, run on the CPU with candle-transformers' quantized
//! model families.
//!
//! - Architectures (`general.architecture`): `llama` (SmolLM, Llama, Mistral-style files) and
//!   `qwen2`; any other is refused with an error naming it.
//! - Tokenizer and chat template come from the file ([`tokenizer`], [`template`]).
//! - Weights: [`WeightMode::Auto`] (the default) dequantizes every tensor to f32 at load when the
//!   f32 copy takes at most [`AUTO_F32_LIMIT_BYTES`], since prompt processing, which dominates
//!   listwise reranking, runs far faster on f32 GEMMs than on candle's quantized kernels on CPU
//!   (figures in `docs/LLM_RERANK.md`); larger models stay quantized. [`WeightMode::Quantized`]
//!   and [`WeightMode::F32`] force either path.
//! - Decoding is greedy (arg-max), and stops at the end-of-turn or end-of-sequence token, when
//!   the request's completeness check says the answer is complete, or after the token limit.

pub mod template;
pub mod tokenizer;
pub mod weights;

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};

use self::template::ChatTemplate;
use self::tokenizer::GgufTokenizer;
use super::{ChatAnswer, ChatBackend, ChatRequest};
use crate::error::{EngineError, Result};

/// [`WeightMode::Auto`] dequantizes when the f32 weights take at most this many bytes (3 GiB:
/// models up to about 0.75 B parameters).
pub const AUTO_F32_LIMIT_BYTES: u64 = 3 << 30;

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// f32 when the f32 copy takes at most [`AUTO_F32_LIMIT_BYTES`], else as stored.
    #[default]
    Auto,
    /// As stored in the file (candle's quantized kernels).
    Quantized,
    /// Dequantized to f32 at load.
    F32,
}

/// Settings of [`GgufChat::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GgufOptions {
    /// How the weights are held.
    pub weights: WeightMode,
}

/// The model families this backend runs.
enum Model {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
}

impl Model {
    /// Logits of the last position after feeding `tokens` at `pos`.
    fn forward(&mut self, tokens: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Model::Llama(m) => m.forward(tokens, pos),
            Model::Qwen2(m) => m.forward(tokens, pos),
        }
    }

    fn clear(&mut self) {
        match self {
            Model::Llama(m) => m.clear_kv_cache(),
            Model::Qwen2(m) => m.clear_kv_cache(),
        }
    }
}

/// A chat model loaded from a GGUF file.
pub struct GgufChat {
    path: PathBuf,
    architecture: String,
    f32_weights: bool,
    model: Model,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    /// Tokens that end the answer (end of turn, end of sequence).
    stop: Vec<u32>,
    /// Most tokens (prompt + answer) the model can attend to.
    context: usize,
}

fn model_error(path: &Path, problem: impl Into<String>) -> EngineError {
    EngineError::Model { path: path.to_path_buf(), problem: problem.into() }
}

impl GgufChat {
    /// Loads the model, tokenizer and chat template of the GGUF file at `path`.
    pub fn load(path: &Path, options: GgufOptions) -> Result<Self> {
        let io = |source| EngineError::Io { path: path.to_path_buf(), source };
        // (Opening a FIFO would wait for a writer.)
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(model_error(path, "not a regular file, expected a GGUF file"));
        }
        let file = File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| model_error(path, format!("not a readable GGUF file: {e}")))?;
        check_tensors(path, &content, file_size)?;
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| model_error(path, "no general.architecture in the GGUF metadata"))?;
        if !matches!(architecture.as_str(), "llama" | "qwen2") {
            return Err(model_error(
                path,
                format!("general.architecture {architecture:?} is not supported (supported: llama, qwen2)"),
            ));
        }
        let tokenizer = tokenizer::from_gguf(path, &content)?;
        let template_text = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok());
        let template = ChatTemplate::detect(path, template_text.map(String::as_str), |t| {
            tokenizer.token_id(t).is_some()
        })?;
        let mut stop: Vec<u32> = tokenizer.eos.into_iter().collect();
        stop.extend(tokenizer.token_id(template.end_of_turn()));
        let trained_context = content
            .metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map_or(usize::MAX, |c| c as usize);
        let context = match architecture.as_str() {
            "llama" => trained_context.min(quantized_llama::MAX_SEQ_LEN),
            _ => trained_context,
        };
        let f32_weights = match options.weights {
            WeightMode::Auto => weights::f32_bytes(&content) <= AUTO_F32_LIMIT_BYTES,
            WeightMode::Quantized => false,
            WeightMode::F32 => true,
        };
        let model = if f32_weights {
            let (content, mut buffer) = weights::dequantize_all(&content, &mut reader)
                .map_err(|e| model_error(path, e.to_string()))?;
            build_model(&architecture, content, &mut buffer)
        } else {
            build_model(&architecture, content, &mut reader)
        }
        .map_err(|e| model_error(path, format!("cannot load the {architecture} weights: {e}")))?;
        Ok(GgufChat {
            path: path.to_path_buf(),
            architecture,
            f32_weights,
            model,
            tokenizer,
            template,
            stop,
            context,
        })
    }

    /// The model's `general.architecture`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// True when the weights were dequantized to f32 at load.
    pub fn f32_weights(&self) -> bool {
        self.f32_weights
    }

    /// The recognised chat template family.
    pub fn template(&self) -> ChatTemplate {
        self.template
    }

    /// Most tokens (prompt plus answer) one request may use.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The token ids of `text`, special tokens (such as `<|im_start|>`) matched whole, no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::Tokenize { problem: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The token ids of the rendered prompt for `request`.
    pub fn prompt_tokens(&self, request: &ChatRequest<'_>) -> Result<Vec<u32>> {
        let encoded = self.encode(&self.template.render(request.messages))?;
        let mut ids = Vec::with_capacity(encoded.len() + 1);
        if let (true, Some(bos)) = (self.tokenizer.add_bos, self.tokenizer.bos) {
            if encoded.first() != Some(&bos) {
                ids.push(bos);
            }
        }
        ids.extend(encoded);
        Ok(ids)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .tokenizer
            .decode(ids, true)
            .map_err(|e| EngineError::Tokenize { problem: e.to_string() })
    }

    /// The arg-max token of `logits` (`[1, vocab]` or `[vocab]`).
    fn greedy(logits: &Tensor) -> Result<u32> {
        Ok(logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
    }
}

/// Checks every tensor's shape and place against the file before anything is sized by them
/// (the f32 copy, candle's buffers): its element count (not zero) and byte size computed
/// without overflow, a whole number of its type's blocks, and its data inside the file.
fn check_tensors(path: &Path, content: &Content, file_size: u64) -> Result<()> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let t = &content.tensor_infos[name];
        let bad = |what: String| model_error(path, format!("tensor {name:?}: {what}"));
        let dims = t.shape.dims();
        let elems = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("shape {dims:?} has more elements than 2^64")))?;
        // (candle views an empty tensor's data through a dangling, misaligned pointer.)
        if elems == 0 {
            return Err(bad(format!("shape {dims:?} has no elements")));
        }
        let (block, size) = (t.ggml_dtype.block_size() as u64, t.ggml_dtype.type_size() as u64);
        if block == 0 || !elems.is_multiple_of(block) {
            return Err(bad(format!("{elems} elements are not a whole number of {block}-element blocks")));
        }
        let bytes = (elems / block).checked_mul(size);
        let end = bytes
            .and_then(|b| content.tensor_data_offset.checked_add(t.offset)?.checked_add(b))
            .filter(|&end| end <= file_size);
        if end.is_none() {
            return Err(bad(format!(
                "shape {dims:?} at offset {} does not fit in the file ({file_size} bytes)",
                t.offset
            )));
        }
    }
    Ok(())
}

fn build_model<R: Read + Seek>(arch: &str, content: Content, reader: &mut R) -> candle_core::Result<Model> {
    Ok(match arch {
        "llama" => Model::Llama(quantized_llama::ModelWeights::from_gguf(content, reader, &Device::Cpu)?),
        _ => Model::Qwen2(quantized_qwen2::ModelWeights::from_gguf(content, reader, &Device::Cpu)?),
    })
}

impl ChatBackend for GgufChat {
    fn chat(&mut self, request: &ChatRequest<'_>) -> Result<ChatAnswer> {
        let prompt = self.prompt_tokens(request)?;
        if prompt.len() >= self.context {
            return Err(EngineError::InvalidArgument(format!(
                "{}: the prompt has {} tokens, the model attends to at most {}; lower the window or the \
                 passage budget",
                self.path.display(),
                prompt.len(),
                self.context
            )));
        }
        let max_new = request.max_new_tokens.min(self.context - prompt.len());
        self.model.clear();
        let started = Instant::now();
        let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let mut next = Self::greedy(&self.model.forward(&input, 0)?)?;
        let prompt_time = started.elapsed();
        let mut answer: Vec<u32> = Vec::new();
        let mut text = String::new();
        while answer.len() < max_new && !self.stop.contains(&next) {
            answer.push(next);
            text = self.decode(&answer)?;
            if request.is_complete.is_some_and(|done| done(&text)) || answer.len() == max_new {
                break;
            }
            let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
            next = Self::greedy(&self.model.forward(&input, prompt.len() + answer.len() - 1)?)?;
        }
        Ok(ChatAnswer {
            text,
            prompt_tokens: prompt.len(),
            answer_tokens: answer.len(),
            prompt_time: Some(prompt_time),
        })
    }

    fn describe(&self) -> String {
        let weights = if self.f32_weights { "f32" } else { "quantized" };
        format!(
            "gguf:{} ({}, {weights} weights, {} template)",
            self.path.display(),
            self.architecture,
            self.template.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file::{self, Value};

    use super::*;

    /// Writes a GGUF holding only `metadata` (no tensors).
    fn write_gguf(dir: &Path, metadata: &[(&str, Value)]) -> PathBuf {
        let path = dir.join("model.gguf");
        let mut file = File::create(&path).unwrap();
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut file, &refs, &[]).unwrap();
        path
    }

    fn load_error(metadata: &[(&str, Value)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write_gguf(dir.path(), metadata);
        let err = GgufChat::load(&path, GgufOptions::default()).err().expect("load should fail").to_string();
        assert!(err.contains("model.gguf"), "the error should name the file: {err}");
        err
    }

    fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    #[test]
    fn unsupported_architectures_are_named() {
        let err = load_error(&[("general.architecture", Value::String("mamba".into()))]);
        assert!(err.contains("\"mamba\" is not supported"), "{err}");
        assert!(load_error(&[]).contains("no general.architecture"));
    }

    #[test]
    fn sentencepiece_vocabularies_are_refused() {
        let err = load_error(&[
            ("general.architecture", Value::String("llama".into())),
            ("tokenizer.ggml.model", Value::String("llama".into())),
        ]);
        assert!(err.contains("tokenizer.ggml.model \"llama\" is not supported"), "{err}");
    }

    #[test]
    fn unknown_pre_tokenizers_and_templates_are_refused() {
        let base = |pre: &str, template: &str| {
            vec![
                ("general.architecture", Value::String("llama".into())),
                ("tokenizer.ggml.model", Value::String("gpt2".into())),
                ("tokenizer.ggml.pre", Value::String(pre.into())),
                ("tokenizer.ggml.tokens", strings(&["a", "b", "ab", "<|im_start|>", "<|im_end|>"])),
                ("tokenizer.ggml.merges", strings(&["a b"])),
                ("tokenizer.chat_template", Value::String(template.into())),
            ]
        };
        let err = load_error(&base("falcon", "<|im_start|>"));
        assert!(err.contains("tokenizer.ggml.pre \"falcon\" is not supported"), "{err}");
        let err = load_error(&base("smollm", "[INST] {{ message }} [/INST]"));
        assert!(err.contains("chat_template is not a supported family"), "{err}");
        // Tokenizer and template pass; the weights are missing.
        let err = load_error(&base("smollm", "<|im_start|>"));
        assert!(err.contains("cannot load the llama weights"), "{err}");
    }

    /// Found by the `gguf` fuzz target: a tensor whose shape claims far more than the file holds
    /// made the f32 path reserve that much (64 GiB from a 300-byte file: an abort); a shape
    /// whose element count overflows panicked; an empty tensor made candle build a slice from a
    /// misaligned pointer (undefined behaviour; a panic with debug assertions). All are refused
    /// before anything is sized by them, whatever the weight mode.
    #[test]
    fn tensor_shapes_are_checked_against_the_file() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b", "ab", "<|im_start|>", "<|im_end|>"])),
            ("tokenizer.ggml.merges", strings(&["a b"])),
            ("tokenizer.chat_template", Value::String("<|im_start|>".into())),
        ];
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let t = Tensor::arange(0f32, 32.0, &Device::Cpu).unwrap().reshape((4, 8)).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let mut good = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut good, &refs, &[("token_embd.weight", &q)]).unwrap();
        let good = good.into_inner();
        // The tensor info: name, u32 dimension count (2), u64 dimensions (innermost first).
        let name = b"token_embd.weight";
        let at = good.windows(name.len()).rposition(|w| w == name).unwrap() + name.len() + 4;
        assert_eq!(good[at..at + 16], [8, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        for (dims, needle) in [
            ([8u64, 1 << 34], "does not fit in the file"),
            ([1 << 40, 1 << 40], "more elements than 2^64"),
            ([8, 5], "does not fit in the file"),
            ([0, 4], "has no elements"),
        ] {
            let mut bytes = good.clone();
            bytes[at..at + 8].copy_from_slice(&dims[0].to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&dims[1].to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            for weights in [WeightMode::F32, WeightMode::Auto, WeightMode::Quantized] {
                let err = GgufChat::load(&path, GgufOptions { weights }).err().unwrap().to_string();
                assert!(err.contains("model.gguf") && err.contains("token_embd.weight"), "{err}");
                assert!(err.contains(needle), "{dims:?}: {err}");
            }
        }
        // The shape as written passes the check (and the load fails later, for want of weights).
        std::fs::write(&path, &good).unwrap();
        let err = GgufChat::load(&path, GgufOptions { weights: WeightMode::F32 }).err().unwrap().to_string();
        assert!(err.contains("cannot load the llama weights"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_gguf_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"not a gguf file at all").unwrap();
        let err = GgufChat::load(&path, GgufOptions::default()).err().unwrap().to_string();
        assert!(err.contains("model.gguf") && err.contains("not a readable GGUF file"), "{err}");
        let missing = GgufChat::load(&dir.path().join("nope.gguf"), GgufOptions::default()).err().unwrap();
        assert!(missing.to_string().contains("nope.gguf"), "{missing}");
        let err = GgufChat::load(dir.path(), GgufOptions::default()).err().unwrap().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
