//! The files of an index, one enum variant each.

/// One file of an index directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `meta.json`: [`crate::IndexMeta`] as UTF-8 JSON.
    Meta,
    /// `doc_offsets.u64`: `n_docs + 1` token offsets; document `i` owns tokens
    /// `offsets[i]..offsets[i+1]`.
    DocOffsets,
    /// `embeddings.f16`: `n_tokens × dim` f16 token embeddings, row-major.
    Embeddings,
    /// `doc_id_offsets.u64`: `n_docs + 1` byte offsets into [`Component::DocIdBytes`].
    DocIdOffsets,
    /// `doc_ids.utf8`: the external document ids, concatenated UTF-8.
    DocIdBytes,
    /// `centroids.f16`: `n_centroids × dim` f16 centroids, row-major (v2+, residual kind).
    Centroids,
    /// `buckets.f32`: the residual codec's bucket cutoffs followed by its bucket weights
    /// (v2+, residual kind; see [`crate::ResidualMeta`] for the layout).
    Buckets,
    /// `codes.u16`: the centroid of each token, when there are at most 65536 centroids (v2).
    Codes16,
    /// `codes.u32`: the centroid of each token, when there are more than 65536 centroids (v2).
    Codes32,
    /// `residuals.u8`: `n_tokens × (dim · nbits / 8)` packed quantised residuals (v2+).
    Residuals,
    /// `ivf_offsets.u64`: `n_centroids + 1` offsets into [`Component::IvfDocs`]; centroid `c`
    /// owns entries `off[c]..off[c+1]` (v2).
    IvfOffsets,
    /// `ivf.u32`: for each centroid, the sorted, deduplicated documents with a token assigned to
    /// it (v2).
    IvfDocs,
    /// `codes.packed`: the centroid of each token, bit-packed at
    /// [`crate::packed::code_bits`]`(C)` bits per token into u64 words (v3).
    CodesPacked,
    /// `ivf_bit_offsets.u64`: `n_centroids + 1` bit offsets into [`Component::IvfRice`]; centroid
    /// `c`'s list is bits `off[c]..off[c+1]` (v3).
    IvfBitOffsets,
    /// `ivf_rice_k.u8`: the Rice parameter of each centroid's list (v3).
    IvfRiceK,
    /// `ivf.rice`: for each centroid, its sorted, deduplicated documents, Rice-coded gaps packed
    /// into u64 words (v3).
    IvfRice,
    /// `codes.rice`: every document's centroid codes, its tokens ordered by centroid and the
    /// codes run-coded (see [`crate::runs`]), one document after the other in a bit stream (v4).
    CodesRice,
    /// `code_offsets.packed`: `n_docs + 1` bit offsets into [`Component::CodesRice`], packed at
    /// [`crate::runs::offset_bits`] bits each (v4).
    CodeOffsets,
    /// `doc_ids.hash`: an open-addressed hash table from external id to document number (v5):
    /// u32 slots, a power of two of them (at least `n_docs + 1`), `u32::MAX` marking an empty
    /// slot; see [`crate::idhash`].
    DocIdHash,
    /// `manifest.bin`: the live segments and their deleted documents of an updated index (v5),
    /// at the index's root; see [`crate::manifest`]. Not part of a segment.
    Manifest,
    /// `checksums.crc32`: the length and CRC32 of every file of a directory the format does not
    /// lay out itself, inside that directory: the BM25 sub-index's `bm25/checksums.crc32`; see
    /// [`crate::checksums`]. Not part of a segment.
    FileChecksums,
    /// `norms.f16`: per token, the factor that scales its decoded vector (centroid plus
    /// residual) to unit length: the inverse of its L2 norm, in f16 (v6, residual kind, when
    /// [`crate::ResidualMeta::token_norms`]).
    TokenNorms,
    /// `warp_counts.u32`: per centroid, how many tokens it holds in the centroid-grouped copy
    /// (v7, residual kind, when [`crate::ResidualMeta::warp_layout`]; see [`crate::warp`]).
    WarpCounts,
    /// `warp_codes.u8`: the residual bytes of every token grouped by centroid, in blocks of
    /// [`crate::warp::BLOCK`] tokens, position-major within a block (v7).
    WarpCodes,
    /// `warp_docs.u32`: per slot of [`Component::WarpCodes`], its document (`u32::MAX` for the
    /// padding of a centroid's last block) (v7).
    WarpDocs,
    /// `warp_norms.f16`: per slot of [`Component::WarpCodes`], its token's norm factor (as
    /// [`Component::TokenNorms`]; 0 for padding) (v7, when the index stores token norms).
    WarpNorms,
}

/// What a file's bytes pay for, as `colbert-index info` splits an index's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SizeClass {
    /// The quantised residuals (`dim · nbits / 8` bytes per token).
    Residuals,
    /// The centroid codes (one per token).
    Codes,
    /// The inverted file's document lists (one entry per distinct (centroid, document) pair).
    Ivf,
    /// Exact f16 embeddings (`2 · dim` bytes per token).
    Embeddings,
    /// Document offsets and external ids.
    PerDocument,
    /// The centroid-grouped copy of the codes for the WARP search mode (v7, optional).
    Warp,
    /// What does not grow with the corpus: metadata, centroids, buckets, the IVF's per-centroid
    /// offsets and parameters.
    Fixed,
}

impl SizeClass {
    /// Every class, in report order.
    pub const ALL: [SizeClass; 7] = [
        SizeClass::Residuals,
        SizeClass::Codes,
        SizeClass::Ivf,
        SizeClass::Embeddings,
        SizeClass::PerDocument,
        SizeClass::Warp,
        SizeClass::Fixed,
    ];

    /// A short lowercase name (`per_document`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Residuals => "residuals",
            SizeClass::Codes => "codes",
            SizeClass::Ivf => "ivf",
            SizeClass::Embeddings => "embeddings",
            SizeClass::PerDocument => "per_document",
            SizeClass::Warp => "warp",
            SizeClass::Fixed => "fixed",
        }
    }
}

impl Component {
    /// What the component's bytes pay for.
    pub fn size_class(self) -> SizeClass {
        match self {
            Component::Residuals | Component::TokenNorms => SizeClass::Residuals,
            Component::Codes16
            | Component::Codes32
            | Component::CodesPacked
            | Component::CodesRice
            | Component::CodeOffsets => SizeClass::Codes,
            Component::IvfDocs | Component::IvfRice => SizeClass::Ivf,
            Component::Embeddings => SizeClass::Embeddings,
            Component::WarpCounts | Component::WarpCodes | Component::WarpDocs | Component::WarpNorms => {
                SizeClass::Warp
            }
            Component::DocOffsets
            | Component::DocIdOffsets
            | Component::DocIdBytes
            | Component::DocIdHash => SizeClass::PerDocument,
            Component::Manifest
            | Component::FileChecksums
            | Component::Meta
            | Component::Centroids
            | Component::Buckets
            | Component::IvfOffsets
            | Component::IvfBitOffsets
            | Component::IvfRiceK => SizeClass::Fixed,
        }
    }

    /// Every component of format version 1 (the uncompressed kind).
    pub const ALL: [Component; 5] = [
        Component::Meta,
        Component::DocOffsets,
        Component::Embeddings,
        Component::DocIdOffsets,
        Component::DocIdBytes,
    ];

    /// Every component of any version.
    pub const EVERY: [Component; 26] = [
        Component::Meta,
        Component::DocOffsets,
        Component::Embeddings,
        Component::DocIdOffsets,
        Component::DocIdBytes,
        Component::Centroids,
        Component::Buckets,
        Component::Codes16,
        Component::Codes32,
        Component::Residuals,
        Component::IvfOffsets,
        Component::IvfDocs,
        Component::CodesPacked,
        Component::IvfBitOffsets,
        Component::IvfRiceK,
        Component::IvfRice,
        Component::CodesRice,
        Component::CodeOffsets,
        Component::DocIdHash,
        Component::Manifest,
        Component::FileChecksums,
        Component::TokenNorms,
        Component::WarpCounts,
        Component::WarpCodes,
        Component::WarpDocs,
        Component::WarpNorms,
    ];

    /// The file name inside the index directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Component::Meta => "meta.json",
            Component::DocOffsets => "doc_offsets.u64",
            Component::Embeddings => "embeddings.f16",
            Component::DocIdOffsets => "doc_id_offsets.u64",
            Component::DocIdBytes => "doc_ids.utf8",
            Component::Centroids => "centroids.f16",
            Component::Buckets => "buckets.f32",
            Component::Codes16 => "codes.u16",
            Component::Codes32 => "codes.u32",
            Component::Residuals => "residuals.u8",
            Component::IvfOffsets => "ivf_offsets.u64",
            Component::IvfDocs => "ivf.u32",
            Component::CodesPacked => "codes.packed",
            Component::IvfBitOffsets => "ivf_bit_offsets.u64",
            Component::IvfRiceK => "ivf_rice_k.u8",
            Component::IvfRice => "ivf.rice",
            Component::CodesRice => "codes.rice",
            Component::CodeOffsets => "code_offsets.packed",
            Component::DocIdHash => "doc_ids.hash",
            Component::Manifest => "manifest.bin",
            Component::FileChecksums => "checksums.crc32",
            Component::TokenNorms => "norms.f16",
            Component::WarpCounts => "warp_counts.u32",
            Component::WarpCodes => "warp_codes.u8",
            Component::WarpDocs => "warp_docs.u32",
            Component::WarpNorms => "warp_norms.f16",
        }
    }

    /// The id stored in the file's footer, so that swapped files are detected.
    pub fn id(self) -> u32 {
        match self {
            Component::Meta => 1,
            Component::DocOffsets => 2,
            Component::Embeddings => 3,
            Component::DocIdOffsets => 4,
            Component::DocIdBytes => 5,
            Component::Centroids => 6,
            Component::Buckets => 7,
            Component::Codes16 => 8,
            Component::Codes32 => 9,
            Component::Residuals => 10,
            Component::IvfOffsets => 11,
            Component::IvfDocs => 12,
            Component::CodesPacked => 13,
            Component::IvfBitOffsets => 14,
            Component::IvfRiceK => 15,
            Component::IvfRice => 16,
            Component::CodesRice => 17,
            Component::CodeOffsets => 18,
            Component::DocIdHash => 19,
            Component::Manifest => 20,
            Component::FileChecksums => 21,
            Component::TokenNorms => 22,
            Component::WarpCounts => 23,
            Component::WarpCodes => 24,
            Component::WarpDocs => 25,
            Component::WarpNorms => 26,
        }
    }

    /// Size in bytes of one element of the payload array.
    pub fn element_size(self) -> usize {
        match self {
            Component::Meta
            | Component::DocIdBytes
            | Component::Residuals
            | Component::IvfRiceK
            | Component::Manifest
            | Component::FileChecksums
            | Component::WarpCodes => 1,
            Component::Embeddings
            | Component::Centroids
            | Component::Codes16
            | Component::TokenNorms
            | Component::WarpNorms => 2,
            Component::Buckets
            | Component::Codes32
            | Component::IvfDocs
            | Component::DocIdHash
            | Component::WarpCounts
            | Component::WarpDocs => 4,
            Component::DocOffsets
            | Component::DocIdOffsets
            | Component::IvfOffsets
            | Component::CodesPacked
            | Component::IvfBitOffsets
            | Component::IvfRice
            | Component::CodesRice
            | Component::CodeOffsets => 8,
        }
    }

    /// The codes component of a version 2 index with `n_centroids` centroids: u16 codes up to
    /// 65536 centroids, u32 above. (Version 3 always has [`Component::CodesPacked`].)
    pub fn codes_for(n_centroids: u64) -> Component {
        if n_centroids <= 1 << 16 {
            Component::Codes16
        } else {
            Component::Codes32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_ids_are_unique() {
        let names: HashSet<_> = Component::EVERY.iter().map(|c| c.file_name()).collect();
        let ids: HashSet<_> = Component::EVERY.iter().map(|c| c.id()).collect();
        assert_eq!(names.len(), Component::EVERY.len());
        assert_eq!(ids.len(), Component::EVERY.len());
        assert!(Component::ALL.iter().all(|c| Component::EVERY.contains(c)));
    }

    #[test]
    fn code_width_follows_centroid_count() {
        assert_eq!(Component::codes_for(1), Component::Codes16);
        assert_eq!(Component::codes_for(65536), Component::Codes16);
        assert_eq!(Component::codes_for(65537), Component::Codes32);
    }
}
