//! Search over an index: the exhaustive MaxSim oracle, centroid-pruned (PLAID) search over
//! compressed indexes, top-k selection, results.

pub mod exhaustive;
pub mod params;
pub mod plaid;
pub mod stages;
pub mod topk;

pub use params::{SearchMode, SearchParams, AUTO_WARP_MAX_K, NDOCS_REFERENCE_DOCS, WARP_PROBE_TOKENS};
pub use stages::StageTimes;
pub use topk::TopK;

/// Whether this CPU computes the stage-1 centroid scores in bf16 when
/// [`SearchParams::bf16_centroid_scores`] asks for it: where [`kernels::Precision::Auto`] runs
/// bf16 (decided by CPU features alone: AMX tiles where usable, or AVX-512 BF16 on a CPU
/// without AMX).
pub fn bf16_centroid_scores_available() -> bool {
    kernels::Kernels::auto().runs_bf16(kernels::Precision::Auto)
}

/// The product stage 1 runs with [`SearchParams::bf16_centroid_scores`] set, in words:
/// `"bf16 (AVX-512 BF16)"`, `"bf16 (AMX tiles)"`, or an f32 kernel's name.
pub fn bf16_kernel_name() -> &'static str {
    kernels::Kernels::auto().dense_name(kernels::Precision::Auto)
}

/// A scored document: internal document number and MaxSim score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Internal document number.
    pub doc: u32,
    /// MaxSim score.
    pub score: f32,
}

/// Results with external ids, best first.
pub type SearchResults = Vec<(String, f32)>;
