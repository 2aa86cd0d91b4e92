//! The engine's error type.

use std::path::PathBuf;

/// Errors raised by the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The on-disk index is unreadable or inconsistent (a corrupt or missing file, named in the
    /// error; `colbert-index verify` checks every file).
    #[error(transparent)]
    Format(index_format::FormatError),
    /// Another process is changing the index (it holds the write lock): retry later.
    #[error("{path}: index busy: {holder} is changing it; retry when it has finished")]
    Busy {
        /// The index.
        path: PathBuf,
        /// Who holds the lock, as it recorded itself.
        holder: String,
    },
    /// A document id that is already in the index was added without asking to replace it.
    #[error("document id `{id}` is already in the index (pass replace to replace it)")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// An input file is malformed.
    #[error("{path}: {problem}")]
    BadInput {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Two inputs disagree on the embedding dimension.
    #[error("dimension mismatch: {what} has dimension {got}, the index has {expected}")]
    DimMismatch {
        /// Which input has the wrong dimension.
        what: String,
        /// The dimension the index expects.
        expected: usize,
        /// The dimension found.
        got: usize,
    },
    /// The requested kernels (`KernelChoice`) do not run on this CPU or build.
    #[error(transparent)]
    Kernels(#[from] kernels::cpu::Unsupported),
    /// An argument is out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A model directory or one of its files is missing, malformed or unsupported.
    #[error("{path}: {problem}")]
    Model {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The tokenizer failed on an input text.
    #[error("tokenizer failed: {problem}")]
    Tokenize {
        /// The tokenizer's message.
        problem: String,
    },
    /// An input holds NaN or infinity.
    #[error("{what}: non-finite value at row {row}, column {col}")]
    NonFinite {
        /// Which input.
        what: String,
        /// Row (vector) index of the first bad value.
        row: usize,
        /// Column (dimension) index of the first bad value.
        col: usize,
    },
    /// A remote service (an LLM server) failed or answered something unusable.
    #[error("{url}: {problem}")]
    Remote {
        /// The endpoint that was called.
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// A tensor operation failed inside candle.
    #[error("tensor computation failed: {0}")]
    #[cfg(feature = "text")]
    Candle(#[from] candle_core::Error),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<index_format::FormatError> for EngineError {
    fn from(e: index_format::FormatError) -> Self {
        match e {
            index_format::FormatError::Busy { path, holder } => EngineError::Busy { path, holder },
            e => EngineError::Format(e),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
