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
/// per process, multiplies bf16 at least 1.25× as fast as f32.
pub fn bf16_centroid_scores_available() -> bool {
    crate::encoder::bf16::pays_off()
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
