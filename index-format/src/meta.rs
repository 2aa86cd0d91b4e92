//! Index metadata, stored as JSON in `meta.json`.

use serde::{Deserialize, Serialize};

/// How the token embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IndexKind {
    /// Full f16 token embeddings, no centroids (`build --nbits 16`).
    Uncompressed,
}

impl IndexKind {
    /// Bits stored per dimension: 16 for the uncompressed kind.
    pub fn nbits(self) -> u32 {
        match self {
            IndexKind::Uncompressed => 16,
        }
    }
}

/// The metadata of an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Format version the index was written with.
    pub format_version: u32,
    /// Storage kind.
    pub kind: IndexKind,
    /// Embedding dimension.
    pub dim: usize,
    /// Number of documents.
    pub n_docs: u64,
    /// Number of token embeddings over all documents.
    pub n_tokens: u64,
    /// The program that wrote the index, e.g. `colbert-index 0.1.0`.
    pub created_by: String,
    /// The encoder's identity and settings, when the index was built from text (opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<serde_json::Value>,
    /// Build parameters, for the record.
    #[serde(default)]
    pub build: serde_json::Value,
}
