//! The files of an index, one enum variant each.

/// One file of an index directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl Component {
    /// Every component of format version 1.
    pub const ALL: [Component; 5] = [
        Component::Meta,
        Component::DocOffsets,
        Component::Embeddings,
        Component::DocIdOffsets,
        Component::DocIdBytes,
    ];

    /// The file name inside the index directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Component::Meta => "meta.json",
            Component::DocOffsets => "doc_offsets.u64",
            Component::Embeddings => "embeddings.f16",
            Component::DocIdOffsets => "doc_id_offsets.u64",
            Component::DocIdBytes => "doc_ids.utf8",
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
        }
    }

    /// Size in bytes of one element of the payload array.
    pub fn element_size(self) -> usize {
        match self {
            Component::Meta | Component::DocIdBytes => 1,
            Component::Embeddings => 2,
            Component::DocOffsets | Component::DocIdOffsets => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_ids_are_unique() {
        let names: HashSet<_> = Component::ALL.iter().map(|c| c.file_name()).collect();
        let ids: HashSet<_> = Component::ALL.iter().map(|c| c.id()).collect();
        assert_eq!(names.len(), Component::ALL.len());
        assert_eq!(ids.len(), Component::ALL.len());
    }
}
