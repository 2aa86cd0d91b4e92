//! The colbert-index engine: MaxSim kernels with run-time CPU dispatch, exhaustive and
//! centroid-pruned search, the ColBERT encoder, and the rerank tail.
//!
//! The on-disk format lives in the `index-format` crate; this crate computes on it.
#![deny(missing_docs)]

pub mod codec;
pub mod collections;
pub mod corpus;
pub mod embeddings;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod index;
pub mod kmeans;
pub mod maxsim;
pub mod rerank;
pub mod search;
pub mod store;
pub mod synth;

pub use error::{EngineError, Result};
pub use index::{BuildOptions, CompressedBuilder, CompressedParams, IndexBuilder, Segment};
pub use search::{Hit, SearchParams};
pub use store::{Index, Query, Reranked, ScoredDoc, Writer};
