//! The colbert-index engine: index building and updates, exhaustive and centroid-pruned
//! search, the embedded ranker, the ColBERT encoder, evaluation and the rerank tail.
//!
//! The on-disk format lives in the `index-format` crate and the compute kernels (MaxSim, dense
//! products, decoding) in the `kernels` crate; this crate computes with them and holds no
//! `unsafe` code.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod codec;
pub mod collections;
pub mod corpus;
pub mod embeddings;
#[cfg(feature = "text")]
pub mod encoder;
pub mod error;
pub mod eval;
pub mod index;
pub mod kmeans;
#[cfg(feature = "rerank")]
pub mod rerank;
pub mod rng;
pub mod search;
pub mod store;
pub mod synth;

pub use error::{EngineError, Result};
pub use index::{BuildOptions, CompressedBuilder, CompressedParams, IndexBuilder, Segment};
pub use kernels::{self, maxsim, KernelChoice, Kernels, Precision};
pub use search::{Hit, SearchMode, SearchParams};
pub use store::{Index, Query, Reranked, ScoredDoc, Writer};
