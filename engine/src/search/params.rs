//! Search parameters.

/// Which search runs over a compressed index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Per segment: [`SearchMode::Warp`] where the segment stores the centroid-grouped layout
    /// (format v7, built with `warp_layout`) and `k` is at most [`AUTO_WARP_MAX_K`], else
    /// [`SearchMode::Plaid`] ([`SearchParams::mode_for`]). Measured at k = 10 (docs/WARP.md):
    /// WARP mode was 1.3–1.8× PLAID mode's speed at the same quality on Cranfield, NPL and the
    /// 10M-token synthetic set, 0.94× on the 1M-token one; at k = 100 it kept less of the
    /// exhaustive top 100 (0.82 against 0.97 on NPL). An index without the stored layout is
    /// searched by PLAID mode, as before the layout existed.
    #[default]
    Auto,
    /// Centroid pruning, then exact scoring of the survivors ([`crate::search::plaid`]).
    Plaid,
    /// Per-query-token scoring of the probed centroids' compressed tokens through lookup tables,
    /// with missing-score estimates (WARP), then exact scoring of the best
    /// [`SearchParams::warp_rescore`].
    Warp,
}

/// The largest `k` for which [`SearchMode::Auto`] runs WARP mode (on segments that store its
/// layout): where it was measured to match PLAID mode's quality.
pub const AUTO_WARP_MAX_K: usize = 10;

/// Parameters of a search. [`SearchParams::for_k`] gives the defaults for a given `k`.
///
/// On an uncompressed index only `k` matters (search is exhaustive and exact). On a compressed
/// index the PLAID stages use the rest (see [`crate::search::plaid`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// Documents returned per query.
    pub k: usize,
    /// Stage 1: centroids probed per query token.
    pub ncells: usize,
    /// Stage 2: centroids whose best score against every query token is below this are ignored
    /// by the approximate (centroid-only) score.
    pub centroid_score_threshold: f32,
    /// Stage 2 keeps the `ndocs` best candidates by approximate score; stage 3 keeps `ndocs / 4`
    /// (at least `k`) by full centroid interaction for exact scoring. With
    /// [`SearchParams::scale_ndocs`] (the default), this is the depth for a segment of up to
    /// [`NDOCS_REFERENCE_DOCS`] documents, scaled up for larger ones.
    pub ndocs: usize,
    /// Scale `ndocs` with the segment searched: by `(n_docs / 32,768)^0.68` on segments of more
    /// than [`NDOCS_REFERENCE_DOCS`] documents (see [`SearchParams::ndocs_for`]). Measured on
    /// clustered synthetic sets of 1M, 3M and 10M tokens, the depth that keeps recall@10 against
    /// exhaustive search at 0.99 grows as the number of documents to the power 0.68, and a fixed
    /// 512 lost 7% of the top 10 at 10M tokens (docs/PLAID.md "Defaults at scale"). `true` in
    /// [`SearchParams::for_k`]; set it to `false` to use `ndocs` as given (the CLI, Python and
    /// HTTP surfaces do when a depth is passed explicitly).
    pub scale_ndocs: bool,
    /// The exact tier, used when the index stores f16 embeddings:
    /// - `None` (default): score the stage-3 survivors with the exact f16 embeddings instead of
    ///   decompressed residuals (more accurate and cheaper than decompressing);
    /// - `Some(0)`: never use the f16 embeddings (score decompressed residuals only);
    /// - `Some(n)`: score decompressed residuals, then rescore the best `n` exactly.
    pub rescore: Option<usize>,
    /// Skip the centroid pruning: decompress and score every document (the oracle that
    /// separates pruning error from quantisation error). The exact tier still applies.
    pub exhaustive: bool,
    /// Fall back to exhaustive search when the index's centroids fit its tokens worse than this
    /// (the mean dot product of a held-out token with its centroid, recorded at build). On
    /// structureless data (i.i.d. random vectors) centroids say nothing about neighbours and
    /// every centroid-pruned engine loses most of its recall; there the fit is low. Clustered
    /// synthetic data measures about 0.9.
    pub min_centroid_fit: f32,
    /// Stage 1 multiplies centroids and query tokens rounded to bf16 (8 significant bits,
    /// products accumulated in f32) where [`kernels::Precision::Auto`] runs bf16, decided by CPU
    /// features alone: on the AMX tiles where they are usable, or with AVX-512 BF16 on a CPU
    /// without AMX (AMD Zen 4 and 5: about 1.75× the f32 rate); f32 elsewhere. The centroid
    /// scores then carry errors of about 1e-4 (at most about 1e-3); the cells probed are still
    /// chosen by f32 scores (a few extra are picked and re-scored), so rounding only moves
    /// documents near the stage-2 and stage-3 cuts, and stage 4's exact scores are unaffected.
    /// `false` computes them in f32, the same on every CPU. In [`SearchMode::Warp`], which needs
    /// only each query token's best centroids (re-scored in f32), the rounded scores come from
    /// 8-bit products where the CPU has AVX-512 VNNI ([`kernels::int8`]), else as above.
    pub bf16_centroid_scores: bool,
    /// The search run on a compressed index: [`SearchMode::Auto`] (default),
    /// [`SearchMode::Plaid`] or [`SearchMode::Warp`].
    pub mode: SearchMode,
    /// WARP mode: centroids probed per query token; `None` (default): enough to reach about
    /// [`WARP_PROBE_TOKENS`] tokens on average ([`SearchParams::nprobe_for`]).
    pub nprobe: Option<usize>,
    /// WARP mode: a query token's estimate for the documents it did not reach is the score of
    /// its first probed centroid (best first) at which the probed centroids hold this many
    /// tokens together.
    pub warp_t_prime: usize,
    /// WARP mode: the best this many documents by WARP score (at least `k`) are scored again
    /// as PLAID's final stage scores its survivors; 0 returns the WARP scores. `None`
    /// (default): as many as PLAID mode's final stage scores (`ndocs / 4`, at least `k`: 128
    /// for k ≤ 10, 256 for k ≤ 100) on segments of up to [`NDOCS_REFERENCE_DOCS`] documents,
    /// more on larger ones ([`SearchParams::warp_rescore_for`]).
    pub warp_rescore: Option<usize>,
}

impl SearchParams {
    /// Defaults for `k`, starting from Stanford PLAID's table (ncells 1/2/4, threshold
    /// 0.5/0.45/0.4, ndocs 256/1024/max(4k, 4096)) and chosen by measurement (docs/PLAID.md
    /// "Defaults"): pruning recall@10 (PLAID against exhaustive search over the same compressed
    /// index) on Cranfield, CISI and NPL at nbits 1, 2 and 4 and on the clustered synthetic
    /// sets, and latency on the 1M-token synthetic set. For k ≤ 10, 2 cells per query token and
    /// 512 candidates keep pruning recall at or above 0.994 everywhere it was measured; 4 cells
    /// and 256 candidates (the previous default) dropped to 0.988 on NPL, and 1 cell to 0.965.
    /// The threshold between 0.4 and 0.5 made no difference on the synthetic sets, so PLAID's
    /// 0.45 is kept as the pruning guard for real data. The depths grow with segments of more
    /// than [`NDOCS_REFERENCE_DOCS`] documents ([`SearchParams::scale_ndocs`]).
    pub fn for_k(k: usize) -> Self {
        let (ncells, centroid_score_threshold, ndocs) = if k <= 10 {
            (2, 0.45, 512)
        } else if k <= 100 {
            (4, 0.45, 1024)
        } else {
            (8, 0.4, k.saturating_mul(4).max(4096))
        };
        SearchParams {
            k,
            ncells,
            centroid_score_threshold,
            ndocs,
            rescore: None,
            exhaustive: false,
            min_centroid_fit: 0.5,
            bf16_centroid_scores: true,
            scale_ndocs: true,
            mode: SearchMode::Auto,
            nprobe: None,
            warp_t_prime: 10_000,
            warp_rescore: None,
        }
    }

    /// The mode run on a segment: [`SearchParams::mode`], with [`SearchMode::Auto`] resolved by
    /// whether the segment stores the centroid-grouped layout (`stored_layout`) and `k`.
    pub fn mode_for(&self, stored_layout: bool) -> SearchMode {
        match self.mode {
            SearchMode::Auto if stored_layout && self.k <= AUTO_WARP_MAX_K => SearchMode::Warp,
            SearchMode::Auto => SearchMode::Plaid,
            mode => mode,
        }
    }

    /// Stage 2's depth on a segment of `n_docs` documents: `ndocs`, or with
    /// [`SearchParams::scale_ndocs`] and more than [`NDOCS_REFERENCE_DOCS`] documents,
    /// `ndocs · (n_docs / NDOCS_REFERENCE_DOCS)^0.68` rounded up (never more than `n_docs`).
    pub fn ndocs_for(&self, n_docs: usize) -> usize {
        if !self.scale_ndocs || n_docs <= NDOCS_REFERENCE_DOCS {
            return self.ndocs;
        }
        let factor = (n_docs as f64 / NDOCS_REFERENCE_DOCS as f64).powf(NDOCS_SCALE_EXPONENT);
        // A float-to-integer cast saturates: a huge `ndocs` stays huge, then bounded by `n_docs`.
        let scaled = (self.ndocs as f64 * factor).ceil() as usize;
        scaled.min(n_docs).max(self.ndocs.min(n_docs))
    }

    /// WARP mode's probes per query token on a segment of `n_tokens` tokens and `n_centroids`
    /// centroids: [`SearchParams::nprobe`], or enough centroids to hold about
    /// [`WARP_PROBE_TOKENS`] tokens at the segment's average (at least 2, at most 64 and the
    /// centroids).
    pub fn nprobe_for(&self, n_tokens: u64, n_centroids: usize) -> usize {
        let n = self.nprobe.unwrap_or_else(|| {
            let per_centroid = (n_tokens as f64 / n_centroids.max(1) as f64).max(1.0);
            ((WARP_PROBE_TOKENS as f64 / per_centroid).ceil() as usize).clamp(2, 64)
        });
        n.clamp(1, n_centroids.max(1))
    }

    /// WARP mode's rescoring depth on a segment of `n_docs` documents:
    /// [`SearchParams::warp_rescore`], or PLAID's final-stage count at the reference size
    /// ([`SearchParams::stage3_keep`] of the unscaled `ndocs`) times
    /// `(n_docs / NDOCS_REFERENCE_DOCS)^0.18` beyond [`NDOCS_REFERENCE_DOCS`] documents.
    pub fn warp_rescore_for(&self, n_docs: usize) -> usize {
        self.warp_rescore.unwrap_or_else(|| {
            let factor = (n_docs as f64 / NDOCS_REFERENCE_DOCS as f64).max(1.0).powf(WARP_RESCORE_EXPONENT);
            // A float-to-integer cast saturates.
            (self.stage3_keep(self.ndocs) as f64 * factor).ceil() as usize
        })
    }

    /// Number of candidates stage 3 keeps for exact scoring when stage 2 keeps `ndocs`:
    /// `ndocs / 4`, at least `k`.
    pub fn stage3_keep(&self, ndocs: usize) -> usize {
        (ndocs / 4).max(self.k)
    }
}

/// Documents in a segment up to which `ndocs` is used as set; larger segments scale it (see
/// [`SearchParams::scale_ndocs`]).
pub const NDOCS_REFERENCE_DOCS: usize = 32_768;

/// WARP mode probes about this many tokens per query token by default (see
/// [`SearchParams::nprobe_for`]): measured on the 1M and 10M-token synthetic sets (docs/WARP.md),
/// fewer probes lost recall against exact MaxSim and more bought none.
pub const WARP_PROBE_TOKENS: usize = 1024;

/// How WARP mode's rescoring depth grows beyond [`NDOCS_REFERENCE_DOCS`] documents: 128 at 1M
/// tokens (112 lost recall) and 176 at 10M (160 lost recall; 184 and deeper gained none) were the
/// shallowest depths that kept PLAID mode's recall against exact MaxSim (docs/WARP.md); this
/// rule gives 193 at 10M.
const WARP_RESCORE_EXPONENT: f64 = 0.18;

/// How `ndocs` grows with a segment's documents beyond [`NDOCS_REFERENCE_DOCS`]: the power law
/// fitted to the depths that keep recall@10 at 0.99 on the 1M, 3M and 10M-token synthetic sets.
const NDOCS_SCALE_EXPONENT: f64 = 0.68;

impl Default for SearchParams {
    fn default() -> Self {
        Self::for_k(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_runs_warp_only_on_a_stored_layout_for_small_k() {
        for (k, stored, want) in [
            (10, true, SearchMode::Warp),
            (11, true, SearchMode::Plaid),
            (10, false, SearchMode::Plaid),
            (1, false, SearchMode::Plaid),
        ] {
            let p = SearchParams::for_k(k);
            assert_eq!(p.mode_for(stored), want, "k {k}, stored {stored}");
            // Explicit modes are kept.
            for mode in [SearchMode::Plaid, SearchMode::Warp] {
                assert_eq!(SearchParams { mode, ..p.clone() }.mode_for(stored), mode);
            }
        }
    }

    #[test]
    fn depth_scales_with_large_segments_only_when_asked() {
        let p = SearchParams::for_k(10);
        assert_eq!(p.ndocs_for(1), 512);
        assert_eq!(p.ndocs_for(NDOCS_REFERENCE_DOCS), 512);
        // 512 · (93,750 / 32,768)^0.68 and 512 · (312,500 / 32,768)^0.68, rounded up.
        assert_eq!(p.ndocs_for(93_750), 1047);
        assert_eq!(p.ndocs_for(312_500), 2373);
        let sizes = [40_000, 100_000, 1_000_000, 10_000_000, 100_000_000];
        assert!(sizes.windows(2).all(|w| p.ndocs_for(w[0]) <= p.ndocs_for(w[1])));
        let fixed = SearchParams { scale_ndocs: false, ..p.clone() };
        assert_eq!(fixed.ndocs_for(312_500), 512);
        // Never more than the documents, and an absurd depth does not overflow.
        let deep = SearchParams { ndocs: usize::MAX, ..p };
        assert_eq!(deep.ndocs_for(1_000_000), 1_000_000);
        assert_eq!(deep.stage3_keep(deep.ndocs_for(1_000_000)), 250_000);
    }

    #[test]
    fn warp_defaults_follow_the_segment_and_k() {
        let p = SearchParams::for_k(10);
        // 1,024 tokens' worth of centroids: 1M tokens over 8,192, 10M over 32,768.
        assert_eq!(p.nprobe_for(1_000_000, 8192), 9);
        assert_eq!(p.nprobe_for(10_000_000, 32_768), 4);
        assert_eq!(p.nprobe_for(100, 8), 8); // every centroid: 12.5 tokens each
        assert_eq!(p.nprobe_for(100_000, 8), 2);
        assert_eq!(p.nprobe_for(100, 1), 1);
        assert_eq!(SearchParams { nprobe: Some(40), ..p.clone() }.nprobe_for(1_000_000, 8192), 40);
        // PLAID's final-stage count, grown by (docs / 32,768)^0.18 on large segments.
        assert_eq!(p.warp_rescore_for(31_250), 128);
        assert_eq!(p.warp_rescore_for(312_500), 193);
        assert_eq!(SearchParams::for_k(100).warp_rescore_for(10_000), 256);
        assert_eq!(SearchParams { warp_rescore: Some(0), ..p }.warp_rescore_for(312_500), 0);
    }
}
