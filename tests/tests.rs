// Integration tests of the root package, one module per area.

/// Evaluation metrics against pytrec_eval fixtures, and the bundled collections.
mod eval;
