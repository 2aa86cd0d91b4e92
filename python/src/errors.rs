//! Engine errors as Python exceptions, with the engine's one-line messages.

use std::path::Path;

use engine::EngineError;
use index_format::FormatError;
use pyo3::exceptions::{PyException, PyFileExistsError, PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    colbert_index,
    ColbertIndexError,
    PyException,
    "Base class of the errors the engine raises about an index (arguments are ValueError, I/O OSError)."
);
pyo3::create_exception!(
    colbert_index,
    IndexBusyError,
    ColbertIndexError,
    "Another process holds the index's write lock: retry when it has finished."
);
pyo3::create_exception!(
    colbert_index,
    CorruptIndexError,
    ColbertIndexError,
    "A file of the index (or an input file) is unreadable or inconsistent; the message names it."
);
pyo3::create_exception!(
    colbert_index,
    DuplicateIdError,
    ColbertIndexError,
    "A document id that is already in the index was added without replace=True."
);

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ColbertIndexError", py.get_type::<ColbertIndexError>())?;
    m.add("IndexBusyError", py.get_type::<IndexBusyError>())?;
    m.add("CorruptIndexError", py.get_type::<CorruptIndexError>())?;
    m.add("DuplicateIdError", py.get_type::<DuplicateIdError>())?;
    Ok(())
}

/// A `ValueError` with `message`.
pub fn invalid(message: String) -> PyErr {
    PyValueError::new_err(message)
}

/// The Python exception for an engine error, carrying its message.
pub fn to_py(e: EngineError) -> PyErr {
    with_message(&e, e.to_string())
}

/// [`to_py`] for an error of building the index at `path`.
pub fn build_error(path: &Path, e: EngineError) -> PyErr {
    with_message(&e, format!("cannot build index {}: {e}", path.display()))
}

fn with_message(e: &EngineError, message: String) -> PyErr {
    match e {
        EngineError::Busy { .. } => IndexBusyError::new_err(message),
        EngineError::DuplicateId { .. } => DuplicateIdError::new_err(message),
        EngineError::Format(FormatError::Missing { .. }) => PyFileNotFoundError::new_err(message),
        EngineError::Format(FormatError::AlreadyExists { .. }) => PyFileExistsError::new_err(message),
        EngineError::Format(FormatError::Io { source, .. }) | EngineError::Io { source, .. } => {
            match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
                std::io::ErrorKind::AlreadyExists => PyFileExistsError::new_err(message),
                _ => PyOSError::new_err(message),
            }
        }
        EngineError::Format(_) | EngineError::BadInput { .. } => CorruptIndexError::new_err(message),
        EngineError::InvalidArgument(_) | EngineError::DimMismatch { .. } | EngineError::NonFinite { .. } => {
            PyValueError::new_err(message)
        }
        _ => ColbertIndexError::new_err(message),
    }
}
