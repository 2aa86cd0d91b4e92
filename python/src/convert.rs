//! Python values to engine values and back.

use engine::index::InMemory;
use engine::ScoredDoc;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::invalid;

/// Search results as Python sees them: `(id, score)` pairs, best first.
pub type Hits = Vec<(String, f32)>;

/// The engine's results as [`Hits`].
pub fn hits(docs: Vec<ScoredDoc>) -> Hits {
    docs.into_iter().map(|d| (d.id, d.score)).collect()
}

/// A borrowed `[tokens, dim]` embeddings array, float32 or float16.
pub enum Embeddings<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F16(PyReadonlyArray2<'py, half::f16>),
}

impl<'py> Embeddings<'py> {
    /// Borrows `obj`, which must be a 2-D float32 or float16 numpy array.
    pub fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
            return Ok(Embeddings::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, half::f16>>() {
            return Ok(Embeddings::F16(a));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(
            "embeddings must be a 2-D float32 or float16 numpy array [tokens, dim]",
        ))
    }

    /// The documents of `lens` over these rows.
    pub fn source<'a>(&'a self, lens: &'a [u64]) -> PyResult<InMemory<'a>> {
        let not_contiguous = || invalid("embeddings must be C-contiguous".into());
        let built = match self {
            Embeddings::F32(a) => {
                InMemory::new(a.as_slice().map_err(|_| not_contiguous())?, a.shape()[1], lens)
            }
            Embeddings::F16(a) => {
                InMemory::f16(a.as_slice().map_err(|_| not_contiguous())?, a.shape()[1], lens)
            }
        };
        built.map_err(crate::errors::to_py)
    }
}

/// Document lengths: non-negative int64 values.
pub fn doclens(lens: &PyReadonlyArray1<'_, i64>) -> PyResult<Vec<u64>> {
    let values = lens.as_array();
    values
        .iter()
        .enumerate()
        .map(|(i, &l)| u64::try_from(l).map_err(|_| invalid(format!("doclens[{i}] = {l} is negative"))))
        .collect()
}

/// Each query as its row-major values and dimension, checked against the index's `dim`.
pub fn query_views<'a>(
    queries: &'a [PyReadonlyArray2<'_, f32>],
    dim: usize,
) -> PyResult<Vec<(&'a [f32], usize)>> {
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let got = q.shape()[1];
            if got != dim {
                return Err(crate::errors::to_py(engine::EngineError::DimMismatch {
                    what: format!("query {i}"),
                    expected: dim,
                    got,
                }));
            }
            let data = q.as_slice().map_err(|_| invalid(format!("query {i} is not C-contiguous")))?;
            Ok((data, got))
        })
        .collect()
}
