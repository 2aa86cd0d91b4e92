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
