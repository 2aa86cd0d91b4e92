//! The search knobs shared by `search` and `bench`.

use clap::{Args, ValueEnum};
use engine::{SearchMode, SearchParams};

/// The search a compressed index runs.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// WARP mode for k up to 10 on an index built with --warp-layout, PLAID mode otherwise
    /// (docs/WARP.md, "Which mode").
    #[default]
    Auto,
    /// Centroid pruning, then exact scoring of the survivors.
    Plaid,
    /// Per-query-token scoring of the probed centroids' compressed tokens through lookup
    /// tables, then exact scoring of the best (docs/WARP.md).
    Warp,
}

/// The library's mode for a `--mode` value.
pub fn search_mode(mode: Mode) -> SearchMode {
    match mode {
        Mode::Auto => SearchMode::Auto,
        Mode::Plaid => SearchMode::Plaid,
        Mode::Warp => SearchMode::Warp,
    }
}

/// PLAID and WARP knobs of a compressed index (ignored by an uncompressed one).
#[derive(Args, Debug, Clone, Default)]
pub struct Knobs {
    /// Compressed index: the search to run.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// WARP mode: centroids probed per query token (default: enough to hold about 1,024 tokens
    /// at the index's average, e.g. 9 at 1M tokens and 8,192 centroids, 4 at 10M and 32,768).
    #[arg(long, value_name = "N")]
    pub nprobe: Option<usize>,
    /// WARP mode: a query token's score for a document it did not reach is the score of its
    /// first probed centroid at which the probed centroids hold this many tokens together
    /// (default 10000).
    #[arg(long, value_name = "TOKENS")]
    pub t_prime: Option<usize>,
    /// WARP mode: the best N documents by WARP score are scored again as PLAID mode scores its
    /// survivors (default: as many as PLAID mode scores exactly, ndocs / 4: 128 up to k=10, 256
    /// up to k=100, for a segment of up to 32,768 documents, times (documents / 32,768)^0.18 on
    /// larger ones; 0 returns the WARP scores).
    #[arg(long, value_name = "N")]
    pub warp_rescore: Option<usize>,
    /// Compressed index: centroids probed per query token (default by k: 2 up to k=10, 4 up to
    /// k=100, then 8).
    #[arg(long, value_name = "N")]
    pub ncells: Option<usize>,
    /// Compressed index: centroid score below which a centroid is ignored by the approximate
    /// score (default by k: 0.45 up to k=100, then 0.4).
    #[arg(long, value_name = "SCORE")]
    pub threshold: Option<f32>,
    /// Compressed index: candidates kept after the pruned approximate score; a quarter of them
    /// are scored exactly (default by k: 512 up to k=10, 1024 up to 100, then max(4k, 4096), for
    /// a segment of up to 32,768 documents, scaled up by (documents / 32,768)^0.68 on larger
    /// ones; a value given here is used as is).
    #[arg(long, value_name = "N")]
    pub ndocs: Option<usize>,
    /// Compressed index with --store-f16: score the final candidates from decompressed
    /// residuals, then rescore the best N exactly from the f16 embeddings (default: score them
    /// all exactly).
    #[arg(long, value_name = "N", conflicts_with = "no_rescore")]
    pub rescore: Option<usize>,
    /// Compressed index: never use the f16 embeddings; score decompressed residuals only.
    #[arg(long)]
    pub no_rescore: bool,
    /// Compressed index: skip centroid pruning and score every document (decompressed).
    #[arg(long)]
    pub exhaustive: bool,
    /// Compressed index: compute the stage-1 centroid scores in f32 even where the CPU runs
    /// bf16 faster (by default, on CPUs with fast AVX-512 BF16, they are computed from
    /// bf16-rounded inputs, which can move documents near the pruning cuts; final scores are
    /// exact either way).
    #[arg(long)]
    pub f32_centroid_scores: bool,
}

impl Knobs {
    /// The search parameters these flags select for `k` results.
    pub fn params(&self, k: usize) -> SearchParams {
        let d = SearchParams::for_k(k);
        SearchParams {
            ncells: self.ncells.unwrap_or(d.ncells),
            centroid_score_threshold: self.threshold.unwrap_or(d.centroid_score_threshold),
            ndocs: self.ndocs.unwrap_or(d.ndocs),
            // A depth passed explicitly is used as given.
            scale_ndocs: self.ndocs.is_none(),
            rescore: if self.no_rescore { Some(0) } else { self.rescore },
            exhaustive: self.exhaustive,
            bf16_centroid_scores: !self.f32_centroid_scores,
            mode: search_mode(self.mode),
            nprobe: self.nprobe.or(d.nprobe),
            warp_t_prime: self.t_prime.unwrap_or(d.warp_t_prime),
            warp_rescore: self.warp_rescore.or(d.warp_rescore),
            ..d
        }
    }
}
