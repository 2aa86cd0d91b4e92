//! A minimal service loop around the embedded ranker: open the index once, share it between
//! worker threads, answer search and rerank requests, and pick up published updates.
//!
//! ```sh
//! colbert-index synth --docs 31250 --out docs.st --queries-out q.st --n-queries 1000
//! colbert-index build --embeddings docs.st --index idx
//! cargo run --release --example service -- idx q.st 8 100000
//! ```
//!
//! Arguments: the index, a queries file (`queries`, [n, len, dim]), the number of worker threads
//! (default 8) and of requests (default 100000). Each request takes the next query (round
//! robin), searches the top 100 and reranks them (the two calls a second-stage ranker makes).
//! It prints the latency percentiles of both calls and the process's resident memory at the
//! start, middle and end (flat: nothing grows per request).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::embeddings::QueryEmbeddings;
use engine::{Index, Query, SearchParams};

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l[6..].trim().trim_end_matches(" kB").trim().to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: service INDEX QUERIES.safetensors [THREADS] [REQUESTS]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let queries = QueryEmbeddings::open(args[2].as_ref())?;
    let threads: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let requests: usize = args.get(4).map_or(Ok(100_000), |s| s.parse())?;

    // Opened once; every worker holds a clone (one reference count).
    let index = Index::open(&dir)?;
    let dim = index.dim();
    println!(
        "opened {} ({} live documents, {} segments); RSS {:.0} MB",
        dir.display(),
        index.n_docs(),
        index.manifest().segments.len(),
        rss_mb()
    );
    let current = Mutex::new(index);
    let next = AtomicUsize::new(0);
    let search_times = Mutex::new(Vec::with_capacity(requests));
    let rerank_times = Mutex::new(Vec::with_capacity(requests));
    let params = SearchParams::for_k(100);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut index = current.lock().unwrap().clone();
                let (mut local_s, mut local_r) = (Vec::new(), Vec::new());
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= requests {
                        break;
                    }
                    if n == requests / 2 {
                        println!("half way: RSS {:.0} MB", rss_mb());
                    }
                    // Every 10,000 requests, pick up updates published by a writer (cheap when
                    // there are none: the manifest's generation is compared).
                    if n.is_multiple_of(10_000) {
                        index = index.reload().expect("reload");
                    }
                    let q = &queries.queries[n % queries.queries.len()];
                    let query = Query::tokens(q, dim).expect("a valid query");
                    let t = Instant::now();
                    let hits = index.search(query, 100, &params).expect("search");
                    local_s.push(t.elapsed());
                    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                    let t = Instant::now();
                    let reranked = index.rerank(query, &ids, 10).expect("rerank");
                    local_r.push(t.elapsed());
                    assert!(reranked.missing.is_empty());
                }
                search_times.lock().unwrap().extend(local_s);
                rerank_times.lock().unwrap().extend(local_r);
            });
        }
    });
    let wall = start.elapsed();
    let (mut s, mut r) = (search_times.into_inner()?, rerank_times.into_inner()?);
    s.sort();
    r.sort();
    println!(
        "{requests} requests on {threads} threads in {:.1} s ({:.0} requests/s); RSS at the end {:.0} MB",
        wall.as_secs_f64(),
        requests as f64 / wall.as_secs_f64(),
        rss_mb()
    );
    println!(
        "search top 100: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        percentile(&s, 0.5),
        percentile(&s, 0.95),
        percentile(&s, 0.99)
    );
    println!(
        "rerank 100:     p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        percentile(&r, 0.5),
        percentile(&r, 0.95),
        percentile(&r, 0.99)
    );
    Ok(())
}
