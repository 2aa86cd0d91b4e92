//! Small measurement helpers: percentiles, recall, memory, page cache, clock cost.

use std::time::{Duration, Instant};

use engine::Hit;

/// Latency percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Nearest-rank percentiles of `samples` (which must not be empty).
pub fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    Percentiles {
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

/// Peak resident set size of this process in bytes (Linux), if known.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Drops the page cache (Linux, root only). Returns why it could not, if it could not.
pub fn drop_page_cache() -> Result<(), String> {
    std::process::Command::new("sync").status().map_err(|e| format!("sync: {e}"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "1").map_err(|e| format!("/proc/sys/vm/drop_caches: {e}"))
}

/// Fraction of `truth`'s documents found in `got`.
pub fn recall(got: &[Hit], truth: &[Hit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    got.iter().filter(|h| truth.iter().any(|t| t.doc == h.doc)).count() as f64 / truth.len() as f64
}

/// Mean recall over queries.
pub fn mean_recall(got: &[Vec<Hit>], truth: &[Vec<Hit>]) -> f64 {
    got.iter().zip(truth).map(|(g, t)| recall(g, t)).sum::<f64>() / truth.len().max(1) as f64
}

/// The mean cost of one `Instant::now()` and elapsed-time subtraction, measured over `n` calls.
pub fn clock_cost(n: u32) -> Duration {
    let start = Instant::now();
    let mut last = start;
    let mut sink = Duration::ZERO;
    for _ in 0..n {
        let now = Instant::now();
        sink += now - last;
        last = now;
    }
    std::hint::black_box(sink);
    start.elapsed() / n.max(1)
}

/// An f32 as the f64 with the same shortest decimal form (0.45, not 0.449999988).
pub fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::NAN)
}
