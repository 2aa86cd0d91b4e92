//! Paired comparison of two runs on the same judgments: is a difference in a mean metric more
//! than the luck of which queries were judged?
//!
//! Both runs are scored per query on the same qrels, so each query gives one paired difference
//! `run − baseline`. [`compare`] reports, for every metric:
//!
//! - the mean difference and a 95% confidence interval for it by the **paired bootstrap**
//!   (resample the queries with replacement, take the mean difference of each resample, keep its
//!   2.5th and 97.5th percentiles);
//! - a two-sided p-value by the **paired randomisation test** (flip the sign of each query's
//!   difference at random; the share of flips whose mean is at least as far from zero as the
//!   observed one, counted as `(hits + 1) / (resamples + 1)` so that it is never 0);
//! - how many queries got better, worse or stayed tied.
//!
//! Both procedures draw from a seeded generator, so a comparison is reproducible.

use crate::error::{EngineError, Result};
use crate::eval::{Evaluation, Metric};
use crate::rng::Rng;

/// The default number of bootstrap and randomisation resamples.
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// The most resamples [`compare`] draws: the bootstrap holds one f64 per resample, and a
/// million already puts the p-value's resolution at 1e-6.
pub const MAX_RESAMPLES: usize = 1_000_000;

/// One metric of a [`Comparison`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricComparison {
    /// The metric compared.
    pub metric: Metric,
    /// Its mean over the queries for the baseline run.
    pub baseline: f64,
    /// Its mean for the compared run.
    pub run: f64,
    /// `run − baseline` (the mean of the paired differences).
    pub delta: f64,
    /// The 95% paired-bootstrap confidence interval of `delta`: (2.5th, 97.5th percentile).
    pub ci95: (f64, f64),
    /// The two-sided p-value of the paired randomisation (sign-flip) test of `delta ≠ 0`.
    pub p_value: f64,
    /// Queries where the run scores higher than the baseline.
    pub better: usize,
    /// Queries where it scores lower.
    pub worse: usize,
    /// Queries where both score the same.
    pub tied: usize,
}

/// The result of [`compare`]: every metric the two evaluations share, in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// One entry per metric.
    pub metrics: Vec<MetricComparison>,
    /// The number of paired queries.
    pub queries: usize,
    /// The resamples drawn for each of the bootstrap and the randomisation test.
    pub resamples: usize,
    /// The generator's seed.
    pub seed: u64,
}

/// Compares `run` against `baseline`, query by query.
///
/// Both must be evaluations of the same qrels with the same metrics (as [`super::evaluate`]
/// gives for two runs scored against one qrels file); anything else is an error, since unpaired
/// queries cannot be compared this way. `resamples` must be between 1 and [`MAX_RESAMPLES`].
pub fn compare(baseline: &Evaluation, run: &Evaluation, resamples: usize, seed: u64) -> Result<Comparison> {
    if resamples == 0 {
        return Err(EngineError::InvalidArgument("the number of resamples must be positive".into()));
    }
    if resamples > MAX_RESAMPLES {
        return Err(EngineError::InvalidArgument(format!(
            "{resamples} resamples: at most {MAX_RESAMPLES} are drawn"
        )));
    }
    if baseline.metrics != run.metrics {
        return Err(EngineError::InvalidArgument("the two evaluations have different metrics".into()));
    }
    if !baseline.per_query.keys().eq(run.per_query.keys()) {
        return Err(EngineError::InvalidArgument(
            "the two evaluations cover different queries: score both runs against the same qrels".into(),
        ));
    }
    let queries = run.per_query.len();
    if queries == 0 {
        return Err(EngineError::InvalidArgument("no judged queries to compare".into()));
    }
    let metrics = run
        .metrics
        .iter()
        .enumerate()
        .map(|(m, &metric)| {
            let pairs: Vec<(f64, f64)> =
                baseline.per_query.values().zip(run.per_query.values()).map(|(b, r)| (b[m], r[m])).collect();
            compare_metric(metric, &pairs, resamples, seed)
        })
        .collect();
    Ok(Comparison { metrics, queries, resamples, seed })
}

/// The comparison of one metric over `(baseline, run)` score pairs (at least one).
fn compare_metric(metric: Metric, pairs: &[(f64, f64)], resamples: usize, seed: u64) -> MetricComparison {
    let n = pairs.len();
    let mean = |xs: &mut dyn Iterator<Item = f64>| xs.sum::<f64>() / n as f64;
    let diffs: Vec<f64> = pairs.iter().map(|&(b, r)| r - b).collect();
    let delta = mean(&mut diffs.iter().copied());

    let mut rng = Rng::derive(seed, 1);
    let mut boot: Vec<f64> = (0..resamples).map(|_| mean(&mut (0..n).map(|_| diffs[rng.below(n)]))).collect();
    boot.sort_unstable_by(f64::total_cmp);
    let ci95 = (percentile(&boot, 0.025), percentile(&boot, 0.975));

    // Sign flips: a flipped mean at least as extreme as the observed one (with a little slack
    // for rounding, so that an all-zero difference gives p = 1).
    let mut rng = Rng::derive(seed, 2);
    let observed = delta.abs() - 1e-12;
    let hits = (0..resamples)
        .filter(|_| {
            let flipped = mean(&mut diffs.iter().map(|&d| if rng.next_u64() >> 63 == 1 { -d } else { d }));
            flipped.abs() >= observed
        })
        .count();
    let p_value = (hits + 1) as f64 / (resamples + 1) as f64;

    MetricComparison {
        metric,
        baseline: mean(&mut pairs.iter().map(|p| p.0)),
        run: mean(&mut pairs.iter().map(|p| p.1)),
        delta,
        ci95,
        p_value,
        better: diffs.iter().filter(|&&d| d > 0.0).count(),
        worse: diffs.iter().filter(|&&d| d < 0.0).count(),
        tied: diffs.iter().filter(|&&d| d == 0.0).count(),
    }
}

/// The `q`-quantile of sorted, non-empty `xs`, interpolated linearly between neighbours.
fn percentile(xs: &[f64], q: f64) -> f64 {
    let pos = q * (xs.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn evaluation(scores: &[f64]) -> Evaluation {
        let per_query: BTreeMap<String, Vec<f64>> =
            scores.iter().enumerate().map(|(i, &s)| (format!("q{i:03}"), vec![s])).collect();
        Evaluation {
            metrics: vec![Metric::Ndcg(10)],
            mean: vec![scores.iter().sum::<f64>() / scores.len() as f64],
            per_query,
            unanswered: Vec::new(),
            unjudged: Vec::new(),
        }
    }

    #[test]
    fn identical_runs_differ_by_nothing() {
        let a = evaluation(&[0.1, 0.5, 0.9, 0.3]);
        let c = compare(&a, &a, 2000, 7).unwrap();
        let m = &c.metrics[0];
        assert_eq!((m.delta, m.ci95, m.p_value), (0.0, (0.0, 0.0), 1.0));
        assert_eq!((m.better, m.worse, m.tied), (0, 0, 4));
    }

    #[test]
    fn a_uniform_gain_is_significant_with_a_point_interval() {
        // Every one of 12 queries gains exactly 0.1: every bootstrap mean is 0.1, and only the
        // two all-same-sign flips (probability 2 / 4096) are as extreme as the observation.
        let base: Vec<f64> = (0..12).map(|i| i as f64 / 20.0).collect();
        let better: Vec<f64> = base.iter().map(|s| s + 0.1).collect();
        let c = compare(&evaluation(&base), &evaluation(&better), 10_000, 0).unwrap();
        let m = &c.metrics[0];
        assert!((m.delta - 0.1).abs() < 1e-12);
        assert!((m.ci95.0 - 0.1).abs() < 1e-12 && (m.ci95.1 - 0.1).abs() < 1e-12);
        assert!(m.p_value < 0.005, "p = {}", m.p_value);
        assert_eq!((m.better, m.worse, m.tied), (12, 0, 0));
        // Swapping the runs flips the sign, not the evidence.
        let r = compare(&evaluation(&better), &evaluation(&base), 10_000, 0).unwrap();
        assert!((r.metrics[0].delta + 0.1).abs() < 1e-12);
        assert_eq!(r.metrics[0].p_value, m.p_value);
    }

    #[test]
    fn noise_around_zero_is_not_significant_and_the_interval_covers_the_truth() {
        // Differences of ±0.2 in equal numbers (mean exactly 0): the interval must hold 0 and
        // be about ±1.96 · 0.2 / sqrt(n) wide; the test must not call it significant.
        let n = 200;
        let base = vec![0.5; n];
        let run: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 0.7 } else { 0.3 }).collect();
        let c = compare(&evaluation(&base), &evaluation(&run), 10_000, 3).unwrap();
        let m = &c.metrics[0];
        assert!(m.delta.abs() < 1e-12);
        assert!(m.ci95.0 < 0.0 && m.ci95.1 > 0.0);
        let half_width = 1.96 * 0.2 / (n as f64).sqrt();
        assert!((m.ci95.1 - half_width).abs() < 0.2 * half_width, "{:?}", m.ci95);
        assert!((-m.ci95.0 - half_width).abs() < 0.2 * half_width, "{:?}", m.ci95);
        assert!(m.p_value > 0.9, "p = {}", m.p_value);
    }

    #[test]
    fn the_same_seed_gives_the_same_answer() {
        let a = evaluation(&[0.1, 0.5, 0.9, 0.3, 0.0, 1.0]);
        let b = evaluation(&[0.2, 0.4, 0.9, 0.6, 0.1, 0.7]);
        assert_eq!(compare(&a, &b, 500, 11).unwrap(), compare(&a, &b, 500, 11).unwrap());
    }

    #[test]
    fn unpaired_evaluations_are_refused() {
        let a = evaluation(&[0.1, 0.5]);
        let b = evaluation(&[0.1, 0.5, 0.2]);
        assert!(compare(&a, &b, 100, 0).unwrap_err().to_string().contains("different queries"));
        let mut c = evaluation(&[0.1, 0.5]);
        c.metrics = vec![Metric::Mrr(10)];
        assert!(compare(&a, &c, 100, 0).unwrap_err().to_string().contains("different metrics"));
        assert!(compare(&a, &a, 0, 0).is_err());
    }
}
