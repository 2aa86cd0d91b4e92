//! Typed errors of the format crate. Every variant names the file at fault.

use std::path::PathBuf;

/// An error reading or writing an index.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An operating-system error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file is absent.
    #[error("{path}: missing index file (is this an index directory?)")]
    Missing {
        /// The file that should exist.
        path: PathBuf,
    },
    /// The file is shorter than its footer, or its footer's length disagrees with its size.
    #[error("{path}: truncated file: {detail}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was expected.
        detail: String,
    },
    /// The footer's magic bytes are wrong: not an index file, or overwritten.
    #[error("{path}: not a colbert-index file (bad footer magic)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a format version this library does not read.
    #[error("{path}: format version {found} is not supported (this build reads versions {oldest} to {newest}){hint}", hint = if *.found > *.newest { "; the index was written by a newer colbert-index: upgrade" } else { "" })]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The oldest version supported.
        oldest: u32,
        /// The newest version supported.
        newest: u32,
    },
    /// The footer says the file holds another component (files swapped or renamed).
    #[error("{path}: file holds component {found}, expected {expected}")]
    WrongComponent {
        /// The file.
        path: PathBuf,
        /// Expected component id.
        expected: u32,
        /// Component id in the footer.
        found: u32,
    },
    /// The payload's CRC32 does not match the footer: the file is corrupt.
    #[error(
        "{path}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// CRC32 stored in the footer.
        stored: u32,
        /// CRC32 of the payload as read.
        computed: u32,
    },
    /// The content is inconsistent (sizes that disagree with the metadata, bad offsets, ...).
    #[error("{path}: corrupt index: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        detail: String,
    },
    /// Another process is changing the index (it holds the index's write lock).
    #[error("{path}: index busy: {holder} is changing it; retry when it has finished")]
    Busy {
        /// The index.
        path: PathBuf,
        /// Who holds the lock, as it recorded itself.
        holder: String,
    },
    /// Something that is not an index of this format is where an index would be replaced.
    #[error("{path}: not a colbert-index index ({detail}); refusing to replace it")]
    NotAnIndex {
        /// The path.
        path: PathBuf,
        /// What was found there.
        detail: String,
    },
    /// A directory already exists where an index would be written.
    #[error("{path}: already exists (pass overwrite to replace it)")]
    AlreadyExists {
        /// The destination.
        path: PathBuf,
    },
}

impl FormatError {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io { path: path.into(), source }
    }

    /// A corruption error on `path`.
    pub fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        FormatError::Corrupt { path: path.into(), detail: detail.into() }
    }
}

/// The format crate's result type.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
