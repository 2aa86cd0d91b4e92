//! Listwise LLM reranking (the RankGPT method) behind one chat trait, with two backends.
//!
//! [`ListwiseReranker`] slides a window (20 passages, step 10) from the back of a ranked list to
//! the front; for each window it shows a chat model the query and the numbered passages
//! ([`prompt`]) and reads the answer (`[3] > [1] > [2]`) as a permutation of the window
//! ([`parse`]). Whatever the model says, the result is a permutation of the input: missing ids are
//! appended in their original order, repeated ids keep their first place, out-of-range ids are
//! dropped, and every repair is counted in the [`RerankOutcome`].
//!
//! Backends implement [`ChatBackend`]:
//! - [`GgufChat`]: a local GGUF model through candle-transformers' quantized model families
//!   (`llama`, `qwen2`), with the tokenizer and chat template read from the GGUF;
//! - [`OpenAiChat`]: an OpenAI-compatible `/v1/chat/completions` server (llama.cpp server, vLLM,
//!   Ollama) over plain HTTP/1.1.
//!
//! See `docs/LLM_RERANK.md` for the prompt, the repair rules and measured speed.

pub mod gguf;
pub mod listwise;
pub mod openai;
pub mod parse;
pub mod prompt;
pub mod spec;

use std::time::Duration;

pub use gguf::{GgufChat, GgufOptions, WeightMode};
pub use listwise::{ListwiseConfig, ListwiseReranker, RerankOutcome};
pub use openai::{OpenAiChat, OpenAiOptions};
pub use parse::{parse_permutation, Repairs};
pub use spec::LlmSpec;

use crate::error::Result;

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

impl Role {
    /// The role's name in chat templates and the OpenAI protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into() }
    }
}

/// One chat completion to compute.
#[derive(Clone, Copy)]
pub struct ChatRequest<'a> {
    /// The conversation so far; the answer is the assistant's next turn.
    pub messages: &'a [ChatMessage],
    /// Most tokens the answer may have.
    pub max_new_tokens: usize,
    /// Called on the answer so far by backends that generate token by token (the local one):
    /// when it returns true, generation stops early. Remote backends ignore it.
    pub is_complete: Option<&'a dyn Fn(&str) -> bool>,
}

/// A backend's answer to a [`ChatRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatAnswer {
    /// The answer text.
    pub text: String,
    /// Tokens in the prompt (0 when a remote server does not report usage).
    pub prompt_tokens: usize,
    /// Tokens in the answer (0 when a remote server does not report usage).
    pub answer_tokens: usize,
    /// Time spent processing the prompt, when the backend measures it (the local one does).
    pub prompt_time: Option<Duration>,
}

/// A chat model that answers deterministically (greedy decoding, temperature 0).
pub trait ChatBackend {
    /// Computes the assistant's next turn for `request`.
    fn chat(&mut self, request: &ChatRequest<'_>) -> Result<ChatAnswer>;

    /// A short description of the backend for logs and `--json` output (model file or URL).
    fn describe(&self) -> String;
}

impl<B: ChatBackend + ?Sized> ChatBackend for Box<B> {
    fn chat(&mut self, request: &ChatRequest<'_>) -> Result<ChatAnswer> {
        (**self).chat(request)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}
