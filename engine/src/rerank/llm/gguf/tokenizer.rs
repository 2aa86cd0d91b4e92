//! A `tokenizers` tokenizer rebuilt from a GGUF's `tokenizer.ggml.*` metadata.
//!
//! Supported: byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`: SmolLM, Qwen2,
//! Llama 3 and other GPT-2 style models), with the pre-tokenizer chosen by `tokenizer.ggml.pre`:
//! `smollm` (single digits, then the GPT-2 split), `qwen2`, `llama-bpe` (their split patterns),
//! and `gpt2` / `default` (the GPT-2 split). Control and user-defined tokens (`token_type` 3 and 4)
//! become special tokens, matched whole in text and skipped when decoding. SentencePiece
//! vocabularies (`"llama"`, as in Gemma and Llama 2) are refused with an error naming them.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Qwen2's split pattern (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split pattern (digits in groups of up to three).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The token types of `tokenizer.ggml.token_type` that are special (control, user-defined).
const SPECIAL_TOKEN_TYPES: [i32; 2] = [3, 4];

/// A GGUF tokenizer and the ids the generator needs.
pub struct GgufTokenizer {
    /// The rebuilt tokenizer.
    pub tokenizer: Tokenizer,
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (false when absent).
    pub add_bos: bool,
}

impl GgufTokenizer {
    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

fn string_array(content: &Content, key: &str) -> Result<Vec<String>, String> {
    let v = content.metadata.get(key).ok_or_else(|| format!("no {key} in the GGUF metadata"))?;
    let items = v.to_vec().map_err(|_| format!("{key} is not an array"))?;
    items.iter().map(|s| s.to_string().cloned().map_err(|_| format!("{key} holds a non-string"))).collect()
}

fn metadata_u32(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

fn metadata_str<'a>(content: &'a Content, key: &str) -> Option<&'a str> {
    content.metadata.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
}

fn token_types(content: &Content, n: usize) -> Vec<i32> {
    let Some(Value::Array(types)) = content.metadata.get("tokenizer.ggml.token_type") else {
        return vec![1; n];
    };
    types.iter().map(|v| v.to_i32().unwrap_or(1)).collect()
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, String> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, String> {
        let split = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| format!("cannot compile the {pre} split pattern: {e}"))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])))
    };
    match pre {
        "smollm" => Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]))),
        "qwen2" => split(QWEN2_SPLIT),
        "llama-bpe" | "llama3" => split(LLAMA3_SPLIT),
        "gpt2" | "default" => Ok(ByteLevel::new(false, true, true).into()),
        other => Err(format!(
            "tokenizer.ggml.pre {other:?} is not supported (supported: smollm, qwen2, llama-bpe, gpt2, default)"
        )),
    }
}

/// Rebuilds the tokenizer of `content`, read from the GGUF file `path`.
///
/// # Errors
/// [`EngineError::Model`] naming `path` and what is missing or unsupported.
pub fn from_gguf(path: &std::path::Path, content: &Content) -> crate::Result<GgufTokenizer> {
    rebuild(content).map_err(|problem| crate::EngineError::Model { path: path.to_path_buf(), problem })
}

fn rebuild(content: &Content) -> Result<GgufTokenizer, String> {
    let model = metadata_str(content, "tokenizer.ggml.model").unwrap_or("(none)");
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model {model:?} is not supported: only byte-level BPE (\"gpt2\": SmolLM, Qwen2, \
             Llama 3) vocabularies can be rebuilt, not SentencePiece (\"llama\": Gemma, Llama 2)"
        ));
    }
    let tokens = string_array(content, "tokenizer.ggml.tokens")?;
    let merges = string_array(content, "tokenizer.ggml.merges")?;
    let merges = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or("tokenizer.ggml.merges holds an entry without a space")?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("cannot build the BPE vocabulary: {e}"))?;
    let pre = metadata_str(content, "tokenizer.ggml.pre").unwrap_or("default");
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let types = token_types(content, tokens.len());
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| SPECIAL_TOKEN_TYPES.contains(t))
        .map(|(tok, _)| AddedToken::from(tok.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&special);
    let add_bos = content.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok());
    Ok(GgufTokenizer {
        tokenizer,
        tokens,
        eos: metadata_u32(content, "tokenizer.ggml.eos_token_id"),
        bos: metadata_u32(content, "tokenizer.ggml.bos_token_id"),
        add_bos: add_bos.unwrap_or(false),
    })
}
