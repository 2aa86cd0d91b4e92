//! Format versions and the compatibility check.

/// The format version this library writes.
pub const FORMAT_VERSION: u32 = 7;
/// The oldest format version this library reads.
pub const OLDEST_SUPPORTED_VERSION: u32 = 1;

/// Known format versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum FormatVersion {
    /// Version 1: uncompressed f16 token embeddings.
    V1 = 1,
    /// Version 2: adds the residual-compressed kind (centroids, codes, packed residuals, IVF).
    V2 = 2,
    /// Version 3: the residual kind's codes bit-packed and its inverted file Rice-coded.
    V3 = 3,
    /// Version 4: the residual kind's tokens ordered by centroid within each document and its
    /// codes run-coded per document.
    V4 = 4,
    /// Version 5: updatable indexes: added segments and deleted documents named by a manifest
    /// (`manifest.bin`), and an id lookup table (`doc_ids.hash`) in every segment.
    V5 = 5,
    /// Version 6: a residual index of unit-norm tokens stores each token's inverse decoded norm
    /// (`norms.f16`), so that tokens can be scored through per-query lookup tables.
    V6 = 6,
    /// Version 7: a residual index may keep a centroid-grouped copy of its tokens for the WARP
    /// search mode (`warp_counts.u32`, `warp_codes.u8`, `warp_docs.u32`, `warp_norms.f16`).
    V7 = 7,
}

impl FormatVersion {
    /// The version for a raw number, if this library knows it.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            4 => Some(Self::V4),
            5 => Some(Self::V5),
            6 => Some(Self::V6),
            7 => Some(Self::V7),
            _ => None,
        }
    }

    /// Whether this library can read files of version `v`.
    pub fn is_supported(v: u32) -> bool {
        (OLDEST_SUPPORTED_VERSION..=FORMAT_VERSION).contains(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_versions_are_supported() {
        for v in 0..100u32 {
            assert_eq!(FormatVersion::is_supported(v), FormatVersion::from_u32(v).is_some(), "{v}");
        }
        assert!(FormatVersion::is_supported(FORMAT_VERSION));
    }
}
