//! MaxSim scoring: `Σ_q max_d q·d` over f16 document tokens with f32 accumulation.
//!
//! The kernel is chosen once per process from the CPU's features (see [`Kernel::detect`]);
//! every SIMD path is tested against the scalar oracle in [`scalar`].

pub mod scalar;

use half::f16;

/// A MaxSim implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable scalar code: the oracle.
    Scalar,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::Scalar
    }

    /// Every kernel this CPU can run, scalar first.
    pub fn available() -> Vec<Kernel> {
        vec![Kernel::Scalar]
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
        }
    }
}

/// A query prepared for scoring many documents.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    tokens: Vec<f32>,
    len: usize,
    dim: usize,
}

impl PreparedQuery {
    /// Prepares a row-major `[len × dim]` query.
    ///
    /// # Panics
    /// If `tokens.len()` is not a multiple of `dim`, or `dim` is zero.
    pub fn new(tokens: &[f32], dim: usize) -> Self {
        assert!(dim > 0 && tokens.len() % dim == 0, "query shape");
        Self { tokens: tokens.to_vec(), len: tokens.len() / dim, dim }
    }

    /// Number of query tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the query has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The row-major tokens.
    pub fn tokens(&self) -> &[f32] {
        &self.tokens
    }
}

/// Scores documents against one query with the process-wide kernel, reusing scratch space.
#[derive(Debug)]
pub struct Scorer<'q> {
    query: &'q PreparedQuery,
    kernel: Kernel,
}

impl<'q> Scorer<'q> {
    /// A scorer using the detected kernel.
    pub fn new(query: &'q PreparedQuery) -> Self {
        Self::with_kernel(query, Kernel::detect())
    }

    /// A scorer using a given kernel (for tests and benchmarks).
    pub fn with_kernel(query: &'q PreparedQuery, kernel: Kernel) -> Self {
        Self { query, kernel }
    }

    /// MaxSim of the query against a row-major `[n × dim]` f16 document. An empty document scores 0.
    pub fn score_f16(&mut self, doc: &[f16]) -> f32 {
        match self.kernel {
            Kernel::Scalar => scalar::maxsim_f16(self.query.tokens(), doc, self.query.dim()),
        }
    }
}
