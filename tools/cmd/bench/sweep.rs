//! `bench --sweep`: recall and latency over a grid of the PLAID pruning knobs and of the WARP
//! knobs, and the Pareto frontier (the settings no other setting beats on both recall and
//! latency).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use engine::{Hit, SearchMode, SearchParams, Segment};

use super::stats::{decimal, mean_recall, percentiles};

/// Flags of the sweep.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Also sweep the pruning knobs (compressed indexes) and draw recall against latency.
    #[arg(long)]
    pub sweep: bool,
    /// Sweep: values of --ncells.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8", value_name = "N,..")]
    pub sweep_ncells: Vec<usize>,
    /// Sweep: values of --threshold.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.4,0.45,0.5", value_name = "S,..")]
    pub sweep_thresholds: Vec<f32>,
    /// Sweep: values of --ndocs.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512,1024", value_name = "N,..")]
    pub sweep_ndocs: Vec<usize>,
    /// Sweep, WARP mode (when --mode or --modes names it): values of --nprobe.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16", value_name = "N,..")]
    pub sweep_nprobe: Vec<usize>,
    /// Sweep, WARP mode: values of --warp-rescore.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512", value_name = "N,..")]
    pub sweep_warp_rescore: Vec<usize>,
    /// Sweep: where to write the recall-vs-latency SVG.
    #[arg(long, default_value = "sweep.svg", value_name = "FILE.svg")]
    pub svg: PathBuf,
}

/// One setting of the grid and what it measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    /// The search mode: `plaid` or `warp`.
    pub mode: &'static str,
    /// PLAID: centroids probed per query token.
    pub ncells: Option<usize>,
    /// PLAID: centroid score threshold (as the decimal given).
    pub threshold: Option<f64>,
    /// PLAID: candidates kept by the pruned approximate score.
    pub ndocs: Option<usize>,
    /// WARP: centroids probed per query token.
    pub nprobe: Option<usize>,
    /// WARP: documents rescored.
    pub warp_rescore: Option<usize>,
    /// Median latency of one query, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// Mean recall@k against the oracle.
    pub recall: f64,
    /// On the Pareto frontier: no other point has both lower p50 latency and higher recall.
    pub pareto: bool,
}

impl Point {
    /// The settings, as a short label.
    pub fn label(&self) -> String {
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
        match self.mode {
            "warp" => format!(
                "warp np{} rs{}",
                show(self.nprobe.map(|v| v as f64)),
                show(self.warp_rescore.map(|v| v as f64))
            ),
            _ => format!(
                "nc{} t{} nd{}",
                show(self.ncells.map(|v| v as f64)),
                show(self.threshold),
                show(self.ndocs.map(|v| v as f64))
            ),
        }
    }

    fn empty(mode: &'static str) -> Self {
        Point {
            mode,
            ncells: None,
            threshold: None,
            ndocs: None,
            nprobe: None,
            warp_rescore: None,
            p50_ms: 0.0,
            p95_ms: 0.0,
            recall: 0.0,
            pareto: false,
        }
    }
}

/// Measures every setting of the grids (other parameters from `base`) on `queries`, one query
/// per call: the PLAID grid when `plaid`, the WARP grid when `warp`; marks the Pareto frontier.
#[allow(clippy::too_many_arguments)]
pub fn run(
    index: &Segment,
    queries: &[Vec<f32>],
    truth: &[Vec<Hit>],
    base: &SearchParams,
    args: &SweepArgs,
    warmup: usize,
    plaid: bool,
    warp: bool,
) -> Result<Vec<Point>> {
    if !index.is_compressed() {
        bail!("--sweep needs a compressed index (the uncompressed kind has no pruning knobs)");
    }
    if plaid
        && (args.sweep_ncells.is_empty() || args.sweep_thresholds.is_empty() || args.sweep_ndocs.is_empty())
    {
        bail!(
            "--sweep needs at least one value of each of --sweep-ncells, --sweep-thresholds, --sweep-ndocs"
        );
    }
    if warp && (args.sweep_nprobe.is_empty() || args.sweep_warp_rescore.is_empty()) {
        bail!(
            "--sweep of WARP mode needs at least one value of each of --sweep-nprobe, --sweep-warp-rescore"
        );
    }
    let measure = |params: &SearchParams, mut point: Point| -> Result<Point> {
        for q in queries.iter().cycle().take(warmup) {
            index.search_one(q, params, None)?;
        }
        let mut lat: Vec<Duration> = Vec::with_capacity(queries.len());
        let mut got = Vec::with_capacity(queries.len());
        for q in queries {
            let t = Instant::now();
            got.push(index.search_one(q, params, None)?);
            lat.push(t.elapsed());
        }
        let p = percentiles(&lat);
        (point.p50_ms, point.p95_ms, point.recall) = (p.p50_ms, p.p95_ms, mean_recall(&got, truth));
        Ok(point)
    };
    let mut points = Vec::new();
    if plaid {
        for &ncells in &args.sweep_ncells {
            for &threshold in &args.sweep_thresholds {
                for &ndocs in &args.sweep_ndocs {
                    let params = SearchParams {
                        mode: SearchMode::Plaid,
                        ncells,
                        centroid_score_threshold: threshold,
                        ndocs,
                        scale_ndocs: false,
                        ..base.clone()
                    };
                    let point = Point {
                        ncells: Some(ncells),
                        threshold: Some(decimal(threshold)),
                        ndocs: Some(ndocs),
                        ..Point::empty("plaid")
                    };
                    points.push(measure(&params, point)?);
                }
            }
        }
    }
    if warp {
        for &nprobe in &args.sweep_nprobe {
            for &rescore in &args.sweep_warp_rescore {
                let params = SearchParams {
                    mode: SearchMode::Warp,
                    nprobe: Some(nprobe),
                    warp_rescore: Some(rescore),
                    ..base.clone()
                };
                let point =
                    Point { nprobe: Some(nprobe), warp_rescore: Some(rescore), ..Point::empty("warp") };
                points.push(measure(&params, point)?);
            }
        }
    }
    mark_pareto(&mut points);
    Ok(points)
}

/// Marks the points that no other point dominates (strictly higher recall at no higher
/// latency, or strictly lower latency at no lower recall).
pub fn mark_pareto(points: &mut [Point]) {
    let dominated: Vec<bool> = points
        .iter()
        .map(|p| {
            points.iter().any(|o| {
                (o.recall > p.recall && o.p50_ms <= p.p50_ms) || (o.recall >= p.recall && o.p50_ms < p.p50_ms)
            })
        })
        .collect();
    for (p, d) in points.iter_mut().zip(dominated) {
        p.pareto = !d;
    }
}

/// A knob's value for a table, `-` where the mode has no such knob.
pub fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

/// Prints the points as a table, frontier first by latency.
pub fn print_points(out: &mut impl std::io::Write, points: &[Point]) -> std::io::Result<()> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| b.pareto.cmp(&a.pareto).then(a.p50_ms.total_cmp(&b.p50_ms)));
    writeln!(
        out,
        "{:<6} {:>6} {:>9} {:>6} {:>6} {:>7} {:>9} {:>9} {:>9} {:>7}",
        "mode", "ncells", "threshold", "ndocs", "nprobe", "rescore", "p50 ms", "p95 ms", "recall@k", "pareto"
    )?;
    for p in sorted {
        writeln!(
            out,
            "{:<6} {:>6} {:>9} {:>6} {:>6} {:>7} {:>9.3} {:>9.3} {:>9.4} {:>7}",
            p.mode,
            cell(p.ncells),
            cell(p.threshold),
            cell(p.ndocs),
            cell(p.nprobe),
            cell(p.warp_rescore),
            p.p50_ms,
            p.p95_ms,
            p.recall,
            if p.pareto { "*" } else { "" }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(p50_ms: f64, recall: f64) -> Point {
        Point {
            ncells: Some(1),
            threshold: Some(0.5),
            ndocs: Some(1),
            p50_ms,
            p95_ms: p50_ms,
            recall,
            ..Point::empty("plaid")
        }
    }

    #[test]
    fn the_frontier_keeps_only_undominated_points() {
        let mut points =
            vec![pt(1.0, 0.5), pt(2.0, 0.9), pt(2.5, 0.8), pt(3.0, 0.95), pt(1.0, 0.4), pt(4.0, 0.95)];
        mark_pareto(&mut points);
        let flags: Vec<bool> = points.iter().map(|p| p.pareto).collect();
        assert_eq!(flags, [true, true, false, true, false, false]);
    }
}
