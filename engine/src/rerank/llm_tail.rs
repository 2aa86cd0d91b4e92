//! The listwise LLM reranker as a pipeline tail stage (`search --llm SPEC --llm-top N`).

use std::sync::Mutex;

use super::llm::{ChatBackend, GgufOptions, ListwiseConfig, ListwiseReranker, LlmSpec, OpenAiOptions};
use super::{Candidate, Reranker, Scored};
use crate::error::{EngineError, Result};

/// A [`ListwiseReranker`] behind a lock, so the pipeline can share it across queries (the model
/// answers one prompt at a time).
pub struct LlmTail {
    inner: Mutex<ListwiseReranker<Box<dyn ChatBackend + Send>>>,
}

impl LlmTail {
    /// Opens the backend `spec` names (`gguf:FILE` or `openai:URL`) with default options, except
    /// for the limit on one request to an OpenAI-compatible server when `timeout` is given.
    pub fn open(spec: &str, timeout: Option<std::time::Duration>) -> Result<Self> {
        let spec: LlmSpec = spec.parse()?;
        let mut openai = OpenAiOptions::new("");
        if let Some(t) = timeout {
            openai.timeout = t;
        }
        let backend = spec.open(GgufOptions::default(), openai)?;
        let reranker = ListwiseReranker::new(backend, ListwiseConfig::default())?;
        Ok(LlmTail { inner: Mutex::new(reranker) })
    }
}

impl Reranker for LlmTail {
    fn name(&self) -> &str {
        "llm"
    }

    fn rerank(&self, query: &str, candidates: &[Candidate]) -> Result<Vec<Scored>> {
        let passages: Vec<&str> = candidates.iter().map(|c| c.text.as_str()).collect();
        let mut inner =
            self.inner.lock().map_err(|_| EngineError::InvalidArgument("LLM reranker poisoned".into()))?;
        let outcome = inner.rerank(query, &passages)?;
        let n = outcome.order.len();
        // Scores encode the LLM's order: the first gets n, the last 1.
        Ok(outcome
            .order
            .iter()
            .enumerate()
            .map(|(rank, &i)| Scored { id: candidates[i].id.clone(), score: (n - rank) as f32 })
            .collect())
    }
}
