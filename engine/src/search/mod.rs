//! Search over an index: the exhaustive MaxSim oracle, centroid-pruned (PLAID) search over
//! compressed indexes, top-k selection, results.

pub mod exhaustive;
pub mod params;
pub mod plaid;
pub mod stages;
pub mod topk;

pub use params::SearchParams;
pub use stages::StageTimes;
pub use topk::TopK;

/// Whether this CPU computes the stage-1 centroid scores in bf16 when
/// [`SearchParams::bf16_centroid_scores`] asks for it: it has AVX-512 BF16 and, measured once
/// per process, multiplies bf16 at least 1.25× as fast as f32 (with `vdpbf16ps`, or on AMX
/// tiles where the CPU has them).
pub fn bf16_centroid_scores_available() -> bool {
    crate::encoder::bf16::pays_off()
}

/// The bf16 product stage 1 runs where [`bf16_centroid_scores_available`], in words:
/// `"bf16 (AVX-512 BF16)"` or `"bf16 (AMX tiles)"`.
pub fn bf16_kernel_name() -> &'static str {
    crate::encoder::bf16::kernel_name()
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
