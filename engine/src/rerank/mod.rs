//! Hybrid retrieval and the rerank tail: a BM25 first stage next to the ColBERT index
//! ([`bm25`]), Reciprocal Rank Fusion of ranked lists ([`rrf`]), a cross-encoder reranker
//! ([`cross`]), a listwise LLM reranker ([`llm`]), and the [`pipeline`] that chains them with
//! per-stage timings.
//!
//! Every stage speaks external document ids ([`Scored`]), since BM25 and ColBERT number
//! documents independently. First stages implement [`Retriever`]; tail stages implement
//! [`Reranker`] and read document text through [`DocTexts`].

pub mod bm25;
pub mod cross;
pub mod llm;
pub mod llm_tail;
pub mod pipeline;
pub mod rrf;

pub use bm25::{Bm25Builder, Bm25Index};
pub use cross::{CrossEncoder, CrossEncoderOptions};
pub use pipeline::{ColbertRetriever, Pipeline, PipelineResult, PipelineSpec, StageTiming, TailSpec};
pub use rrf::Rrf;

use crate::error::Result;

/// A document of a ranked list: its external id and the score the stage gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// External document id.
    pub id: String,
    /// The stage's score (higher is better; only comparable within one list).
    pub score: f32,
}

/// A candidate handed to a reranker: id, the score of the previous stage, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// External document id.
    pub id: String,
    /// Score from the previous stage.
    pub score: f32,
    /// The document's text (title and body joined, as indexed).
    pub text: String,
}

/// A first stage: retrieves a ranked list for a query text.
pub trait Retriever: Sync {
    /// A short name used in timings and descriptions (`bm25`, `colbert`).
    fn name(&self) -> &str;

    /// The best `k` documents for `query`, best first.
    fn retrieve(&self, query: &str, k: usize) -> Result<Vec<Scored>>;
}

/// A tail stage: reorders candidates given their texts.
pub trait Reranker: Sync {
    /// A short name used in timings and descriptions (`cross-encoder`).
    fn name(&self) -> &str;

    /// Reorders `candidates` for `query`: returns every candidate id exactly once, best first,
    /// with the reranker's score. [`Pipeline`] checks the permutation.
    fn rerank(&self, query: &str, candidates: &[Candidate]) -> Result<Vec<Scored>>;
}

/// Where tail stages read document texts from.
pub trait DocTexts: Sync {
    /// The texts of `ids`, in order; `None` for an id it does not know.
    fn texts(&self, ids: &[&str]) -> Result<Vec<Option<String>>>;
}

impl DocTexts for std::collections::HashMap<String, String> {
    fn texts(&self, ids: &[&str]) -> Result<Vec<Option<String>>> {
        Ok(ids.iter().map(|id| self.get(*id).cloned()).collect())
    }
}
