//! Index metadata, stored as JSON in `meta.json`.

use serde::{Deserialize, Serialize};

/// How the token embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IndexKind {
    /// Full f16 token embeddings, no centroids (`build --nbits 16`).
    Uncompressed,
    /// Residual compression (format v2 and later): each token is a centroid id plus its residual
    /// quantised to `nbits` bits per dimension; an inverted file maps centroids to documents. The
    /// details are in [`IndexMeta::residual`].
    Residual {
        /// Bits per dimension of the quantised residual: 1, 2 or 4.
        nbits: u32,
    },
}

impl IndexKind {
    /// Bits stored per dimension: 16 for the uncompressed kind.
    pub fn nbits(self) -> u32 {
        match self {
            IndexKind::Uncompressed => 16,
            IndexKind::Residual { nbits } => nbits,
        }
    }
}

/// The parameters of a residual-compressed index ([`IndexKind::Residual`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidualMeta {
    /// Number of centroids `C`; in v2 codes are u16 when `C ≤ 65536`, u32 above; from v3 they
    /// take `max(1, ⌈log2 C⌉)` bits each.
    pub n_centroids: u64,
    /// Whether `buckets.f32` holds one quantiser per dimension (`dim × (2^nbits − 1)` cutoffs
    /// then `dim × 2^nbits` weights) instead of one pooled quantiser (`2^nbits − 1` cutoffs then
    /// `2^nbits` weights).
    pub per_dim_buckets: bool,
    /// Whether the exact f16 embeddings (`embeddings.f16`) are kept for rescoring.
    pub has_embeddings: bool,
    /// Whether `buckets.f32` holds joint codebooks instead of cutoffs and weights: no cutoffs,
    /// then for each byte position of a packed residual the 256 codewords of the
    /// `g = 8 / nbits` dimensions it holds (`dim × 256` values, `[position][byte][g]`).
    /// Absent (false) in indexes written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joint_codebooks: bool,
    /// Whether every indexed token had unit L2 norm (within 1%), as ColBERT embeddings do: then
    /// a decoded vector (centroid plus quantised residual) is renormalised to unit length, which
    /// brings it closer to the token it encodes. Absent (false) in indexes written before it
    /// existed (v4), and for inputs that are not normalised.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unit_norm: bool,
    /// Whether the index stores each token's inverse decoded norm (`norms.f16`, v6): then a
    /// decoded vector is `(centroid + residual) · norm`, with the stored factor rather than one
    /// computed from the decoded vector, so that a token can be scored through lookup tables
    /// without being decoded. Only with [`ResidualMeta::unit_norm`]; absent (false) before v6.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub token_norms: bool,
    /// Whether the index keeps a centroid-grouped copy of its tokens (`warp_*` files, v7), which
    /// the WARP search mode reads in place instead of building it in memory. Absent (false)
    /// before v7 and in indexes built without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warp_layout: bool,
}

impl ResidualMeta {
    /// [`ResidualMeta::bucket_counts`], or `None` when a count overflows `usize` (a corrupt
    /// dimension).
    pub fn checked_bucket_counts(&self, nbits: u32, dim: usize) -> Option<(usize, usize)> {
        if self.joint_codebooks {
            return Some((0, dim.checked_mul(256)?));
        }
        let b = 1usize << nbits.min(16);
        let per = if self.per_dim_buckets { dim } else { 1 };
        Some((per.checked_mul(b - 1)?, per.checked_mul(b)?))
    }

    /// Number of cutoffs and of weights in `buckets.f32` for `nbits` and `dim`.
    pub fn bucket_counts(&self, nbits: u32, dim: usize) -> (usize, usize) {
        if self.joint_codebooks {
            return (0, dim * 256);
        }
        let b = 1usize << nbits.min(16);
        let per = if self.per_dim_buckets { dim } else { 1 };
        (per * (b - 1), per * b)
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
    /// The parameters of the residual kind (present exactly when `kind` is
    /// [`IndexKind::Residual`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<ResidualMeta>,
    /// The encoder's identity and settings, when the index was built from text (opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<serde_json::Value>,
    /// Build parameters, for the record.
    #[serde(default)]
    pub build: serde_json::Value,
}
