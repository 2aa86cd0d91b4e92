//! The scalar MaxSim oracle.

use half::f16;

/// MaxSim of a row-major f32 query against a row-major f16 document, both of dimension `dim`.
pub fn maxsim_f16(query: &[f32], doc: &[f16], dim: usize) -> f32 {
    if doc.is_empty() {
        return 0.0;
    }
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for d in doc.chunks_exact(dim) {
            let dot: f32 = q.iter().zip(d).map(|(a, b)| a * b.to_f32()).sum();
            best = best.max(dot);
        }
        total += best;
    }
    total
}
