//! The scalar MaxSim oracle: plain loops, no blocking, no reassociation.
//!
//! Each dot product is summed in dimension order and the per-token maxima in query order, so
//! the SIMD kernels (which accumulate each dot product with FMAs in the same dimension order)
//! differ from it only by rounding; see the tolerance in the kernel tests.

use half::f16;

/// MaxSim of a row-major f32 query against a row-major f16 document, both of dimension `dim`.
/// An empty document scores 0.
pub fn maxsim_f16(query: &[f32], doc: &[f16], dim: usize) -> f32 {
    maxsim_by(query, doc, dim, |a, b| a * b.to_f32())
}

/// MaxSim of a row-major f32 query against a row-major f32 document, both of dimension `dim`.
/// An empty document scores 0.
pub fn maxsim_f32(query: &[f32], doc: &[f32], dim: usize) -> f32 {
    maxsim_by(query, doc, dim, |a, b| a * b)
}

fn maxsim_by<T: Copy>(query: &[f32], doc: &[T], dim: usize, mul: impl Fn(f32, T) -> f32) -> f32 {
    if doc.is_empty() {
        return 0.0;
    }
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for d in doc.chunks_exact(dim) {
            let dot: f32 = q.iter().zip(d).map(|(&a, &b)| mul(a, b)).sum();
            best = best.max(dot);
        }
        total += best;
    }
    total
}
