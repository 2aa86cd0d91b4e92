//! The rerank tail: rerankers that reorder the top of a first-stage result list.

pub mod llm;
