//! Request counters and latency histograms, exposed in the Prometheus text format.
//!
//! Everything is a relaxed atomic: recording a request is a handful of increments, and a scrape
//! reads each counter once (a scrape racing requests may see a count and its histogram one
//! request apart, as with any Prometheus client).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The endpoints measured; every other path is counted as `other`.
pub const ENDPOINTS: [&str; 6] = ["/rerank", "/search", "/health", "/metrics", "/openapi.json", "other"];

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Status codes 100..=599 are counted one by one.
const STATUSES: usize = 500;

struct Endpoint {
    by_status: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Endpoint {
    fn new() -> Self {
        Endpoint {
            by_status: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// The server's metrics.
pub struct Metrics {
    endpoints: Vec<Endpoint>,
    in_flight: AtomicU64,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("in_flight", &self.in_flight).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            endpoints: ENDPOINTS.iter().map(|_| Endpoint::new()).collect(),
            in_flight: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        }
    }
}

/// The label under which a request path is counted (Cohere's and Jina's versioned rerank paths
/// count as `/rerank`).
pub fn endpoint_of(path: &str) -> &'static str {
    let path = if RERANK_ALIASES.contains(&path) { "/rerank" } else { path };
    ENDPOINTS.iter().find(|e| **e == path).copied().unwrap_or("other")
}

/// Other paths `/rerank` answers on: the versioned paths Cohere's (`/v1/rerank`, `/v2/rerank`)
/// and Jina's (`/v1/rerank`) clients append to their base URL.
pub const RERANK_ALIASES: [&str; 2] = ["/v1/rerank", "/v2/rerank"];

impl Metrics {
    /// Marks a request as started (the in-flight gauge).
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished request to `path` that answered `status` after `elapsed`.
    pub fn finish(&self, path: &str, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let label = endpoint_of(path);
        let i = ENDPOINTS.iter().position(|e| *e == label).unwrap_or(ENDPOINTS.len() - 1);
        let e = &self.endpoints[i];
        if let Some(slot) = (status as usize).checked_sub(100).and_then(|s| e.by_status.get(s)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| secs <= le) {
            e.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        e.count.fetch_add(1, Ordering::Relaxed);
        e.sum_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The requests to `endpoint` (a label of [`ENDPOINTS`]) that answered `status`.
    pub fn requests(&self, endpoint: &str, status: u16) -> u64 {
        let Some(i) = ENDPOINTS.iter().position(|e| *e == endpoint) else { return 0 };
        (status as usize)
            .checked_sub(100)
            .and_then(|s| self.endpoints[i].by_status.get(s))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Records one check of the index for updates: whether it succeeded and whether it found
    /// (and now serves) a change.
    pub fn reloaded(&self, ok: bool, changed: bool) {
        if !ok {
            self.reload_errors.fetch_add(1, Ordering::Relaxed);
        } else if changed {
            self.reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, plus the index's size and
    /// update generation.
    pub fn render(&self, documents: u64, generation: u64) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP colbert_requests_total HTTP requests answered, by endpoint and status.\n");
        out.push_str("# TYPE colbert_requests_total counter\n");
        for (name, e) in ENDPOINTS.iter().zip(&self.endpoints) {
            for (s, c) in e.by_status.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "colbert_requests_total{{endpoint=\"{name}\",status=\"{}\"}} {n}",
                        s + 100
                    );
                }
            }
        }
        out.push_str("# HELP colbert_request_duration_seconds Time from request to response, by endpoint.\n");
        out.push_str("# TYPE colbert_request_duration_seconds histogram\n");
        for (name, e) in ENDPOINTS.iter().zip(&self.endpoints) {
            let mut cumulative = 0;
            for (le, b) in BUCKETS.iter().zip(&e.buckets) {
                cumulative += b.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "colbert_request_duration_seconds_bucket{{endpoint=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = e.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "colbert_request_duration_seconds_bucket{{endpoint=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let sum = e.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "colbert_request_duration_seconds_sum{{endpoint=\"{name}\"}} {sum}");
            let _ = writeln!(out, "colbert_request_duration_seconds_count{{endpoint=\"{name}\"}} {count}");
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        single(&mut out, "colbert_requests_in_flight", "gauge", "Requests being answered now.", in_flight);
        single(
            &mut out,
            "colbert_index_documents",
            "gauge",
            "Live documents in the served index.",
            documents,
        );
        let help = "Update generation of the served index (0: never updated).";
        single(&mut out, "colbert_index_generation", "gauge", help, generation);
        let help = "Published updates picked up without a restart.";
        single(
            &mut out,
            "colbert_index_reloads_total",
            "counter",
            help,
            self.reloads.load(Ordering::Relaxed),
        );
        let help = "Checks for updates that failed (the served state is kept).";
        let errors = self.reload_errors.load(Ordering::Relaxed);
        single(&mut out, "colbert_index_reload_errors_total", "counter", help, errors);
        out
    }
}

/// Appends one unlabelled metric: its `# HELP` and `# TYPE` lines and its value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_render() {
        let m = Metrics::default();
        for (path, status, ms) in
            [("/rerank", 200, 3), ("/rerank", 400, 0), ("/nope", 404, 0), ("/v2/rerank", 200, 20)]
        {
            m.start();
            m.finish(path, status, Duration::from_millis(ms));
        }
        assert_eq!(m.requests("/rerank", 200), 2);
        assert_eq!(m.requests("other", 404), 1);
        m.reloaded(true, true);
        m.reloaded(true, false);
        m.reloaded(false, false);
        let text = m.render(7, 3);
        assert!(text.contains("colbert_requests_total{endpoint=\"/rerank\",status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("colbert_requests_total{endpoint=\"other\",status=\"404\"} 1\n"), "{text}");
        assert!(
            text.contains("colbert_request_duration_seconds_bucket{endpoint=\"/rerank\",le=\"0.005\"} 2\n")
        );
        assert!(
            text.contains("colbert_request_duration_seconds_bucket{endpoint=\"/rerank\",le=\"+Inf\"} 3\n")
        );
        assert!(text.contains("colbert_request_duration_seconds_count{endpoint=\"/rerank\"} 3\n"));
        assert!(text.contains("colbert_requests_in_flight 0\n"));
        assert!(text.contains("colbert_index_documents 7\n"));
        assert!(text.contains("colbert_index_generation 3\n"));
        assert!(text.contains("colbert_index_reloads_total 1\n"));
        assert!(text.contains("colbert_index_reload_errors_total 1\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
