//! `colbert-index bench`: per-stage latency percentiles, QPS, recall against the exhaustive
//! oracle, index size and peak memory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::embeddings::QueryEmbeddings;
use engine::{Hit, Index, SearchParams};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Query token embeddings (safetensors with `queries` [n, len, dim]).
    #[arg(long, value_name = "FILE.safetensors")]
    pub query_embeddings: PathBuf,
    /// Documents per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Thread counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Queries run before measuring, to warm caches.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Also measure with the index dropped from the page cache first (needs root on Linux;
    /// reported as unavailable otherwise).
    #[arg(long)]
    pub cold: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles of one stage, in milliseconds.
#[derive(Debug, serde::Serialize)]
struct Percentiles {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

fn percentiles(samples: &[Duration]) -> Percentiles {
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
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Drops the page cache (Linux, root only). Returns why it could not, if it could not.
fn drop_page_cache() -> Result<(), String> {
    std::process::Command::new("sync").status().map_err(|e| format!("sync: {e}"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "1").map_err(|e| format!("/proc/sys/vm/drop_caches: {e}"))
}

fn recall(got: &[Hit], truth: &[Hit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    got.iter().filter(|h| truth.iter().any(|t| t.doc == h.doc)).count() as f64 / truth.len() as f64
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts");
    }
    let index = Index::open(&args.index)?;
    let queries = QueryEmbeddings::open(&args.query_embeddings)?;
    if queries.dim != index.meta().dim {
        bail!(
            "{}: queries have dimension {}, the index has {}",
            args.query_embeddings.display(),
            queries.dim,
            index.meta().dim
        );
    }
    let qs = &queries.queries;
    // The oracle: exact MaxSim over every document (over the decompressed vectors for a
    // compressed index without stored f16 embeddings).
    let truth = index.search_exhaustive(qs, args.k)?;
    let params = SearchParams::for_k(args.k);
    let mode = if index.is_compressed() { "plaid" } else { "exhaustive" };
    let oracle = if index.reader().has_embeddings() { "exact" } else { "decompressed" };

    let mut runs = Vec::new();
    for &threads in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("thread pool")?;
        let mut passes = vec![("warm", false)];
        if args.cold {
            passes.insert(0, ("cold", true));
        }
        for (cache, cold) in passes {
            let cold_note = if cold { drop_page_cache().err() } else { None };
            let (lat, results, overhead) = pool.install(|| -> Result<_> {
                if !cold {
                    for q in qs.iter().cycle().take(args.warmup) {
                        index.search(std::slice::from_ref(q), &params)?;
                    }
                }
                let mut lat = Vec::with_capacity(qs.len());
                let mut results = Vec::with_capacity(qs.len());
                let total = Instant::now();
                for q in qs {
                    let t = Instant::now();
                    let r = index.search(std::slice::from_ref(q), &params)?;
                    lat.push(t.elapsed());
                    results.push(r.into_iter().next().unwrap_or_default());
                }
                let measured: Duration = lat.iter().sum();
                Ok((lat, results, total.elapsed().saturating_sub(measured)))
            })?;
            let batch = pool.install(|| -> Result<Duration> {
                let t = Instant::now();
                index.search(qs, &params)?;
                Ok(t.elapsed())
            })?;
            let wall: Duration = lat.iter().sum();
            let mean_recall =
                results.iter().zip(&truth).map(|(g, t)| recall(g, t)).sum::<f64>() / qs.len() as f64;
            runs.push(serde_json::json!({
                "mode": mode,
                "oracle": oracle,
                "threads": threads,
                "cache": cache,
                "cache_note": cold_note,
                "queries": qs.len(),
                "k": args.k,
                "total": percentiles(&lat),
                "qps_single": qs.len() as f64 / wall.as_secs_f64(),
                "qps_batched": qs.len() as f64 / batch.as_secs_f64(),
                "recall_at_k": mean_recall,
                "harness_overhead_fraction": overhead.as_secs_f64() / wall.as_secs_f64(),
            }));
        }
    }
    let meta = index.meta();
    let bytes = index.reader().size_bytes();
    let report = serde_json::json!({
        "index": args.index.display().to_string(),
        "kind": meta.kind,
        "nbits": meta.kind.nbits(),
        "dim": meta.dim,
        "documents": meta.n_docs,
        "tokens": meta.n_tokens,
        "index_bytes": bytes,
        "bytes_per_token": bytes as f64 / meta.n_tokens.max(1) as f64,
        "kernel": engine::maxsim::Kernel::detect().name(),
        "peak_rss_bytes": peak_rss(),
        "runs": runs,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "index {}: {} docs, {} tokens, dim {}, nbits {}, {:.1} bytes/token, kernel {}",
        args.index.display(),
        meta.n_docs,
        meta.n_tokens,
        meta.dim,
        meta.kind.nbits(),
        report["bytes_per_token"].as_f64().unwrap_or(0.0),
        report["kernel"].as_str().unwrap_or("?")
    );
    println!(
        "{:<11} {:>7} {:>5} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9}",
        "mode", "threads", "cache", "p50 ms", "p95 ms", "p99 ms", "QPS", "QPS batch", "recall@k"
    );
    for r in &runs {
        let t = &r["total"];
        println!(
            "{:<11} {:>7} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>11.1} {:>9.4}",
            r["mode"].as_str().unwrap_or(""),
            r["threads"].as_u64().unwrap_or(0),
            r["cache"].as_str().unwrap_or(""),
            t["p50_ms"].as_f64().unwrap_or(0.0),
            t["p95_ms"].as_f64().unwrap_or(0.0),
            t["p99_ms"].as_f64().unwrap_or(0.0),
            r["qps_single"].as_f64().unwrap_or(0.0),
            r["qps_batched"].as_f64().unwrap_or(0.0),
            r["recall_at_k"].as_f64().unwrap_or(0.0),
        );
        if let Some(note) = r["cache_note"].as_str() {
            println!("  cold cache unavailable: {note}");
        }
    }
    println!("recall@k is measured against exhaustive MaxSim over the {oracle} embeddings");
    if let Some(rss) = peak_rss() {
        println!("peak RSS {:.1} MiB", rss as f64 / (1 << 20) as f64);
    }
    Ok(())
}
