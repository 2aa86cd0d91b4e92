//! Search and rerank latency of an index larger than the memory the process may use, with the
//! bytes each query reads from disk. Run by `tools/larger-than-memory.sh`, which puts it in a
//! memory-capped cgroup; on its own it measures the same without a cap.
//!
//! ```sh
//! cargo run --release --example memory_bound -- INDEX QUERIES.safetensors [CANDIDATES]
//! ```
//!
//! Two passes over the queries: the first right after the script dropped the page cache
//! (cold), the second again (warm, as far as the cap lets pages stay cached). Each query searches
//! the top 10 and reranks CANDIDATES (default 1000) documents drawn at random. Prints p50/p95 of
//! both calls per pass, the bytes read from disk per query (`/proc/self/io`), and the peak RSS.

use std::time::{Duration, Instant};

use engine::embeddings::QueryEmbeddings;
use engine::{Index, Query, SearchParams};

fn proc_field(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: memory_bound INDEX QUERIES.safetensors [CANDIDATES]");
        std::process::exit(2);
    }
    let index = Index::open(&args[1])?;
    let queries = QueryEmbeddings::open(args[2].as_ref())?;
    let n_cand: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let ids = index.live_ids();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let candidates: Vec<Vec<&str>> = queries
        .queries
        .iter()
        .map(|_| (0..n_cand).map(|_| ids[rand(ids.len())].as_str()).collect())
        .collect();
    let dim = index.dim();
    println!(
        "index {}: {} documents; {} queries; rerank {} candidates each",
        args[1],
        index.n_docs(),
        queries.queries.len(),
        n_cand
    );
    for pass in ["cold", "warm"] {
        let read0 = proc_field("/proc/self/io", "read_bytes:").unwrap_or(0);
        let (mut s, mut r) = (Vec::new(), Vec::new());
        for (q, c) in queries.queries.iter().zip(&candidates) {
            let query = Query::tokens(q, dim)?;
            let t = Instant::now();
            index.search(query, 10, &SearchParams::for_k(10))?;
            s.push(t.elapsed());
            let t = Instant::now();
            index.rerank(query, c, 10)?;
            r.push(t.elapsed());
        }
        let read = proc_field("/proc/self/io", "read_bytes:").unwrap_or(0) - read0;
        println!(
            "{pass}: search p50 {:.2} ms p95 {:.2} ms; rerank p50 {:.2} ms p95 {:.2} ms; {:.0} KiB read from disk per query",
            pct(&mut s, 0.5),
            pct(&mut s, 0.95),
            pct(&mut r, 0.5),
            pct(&mut r, 0.95),
            read as f64 / 1024.0 / queries.queries.len() as f64
        );
    }
    println!("peak RSS {:.0} MiB", proc_field("/proc/self/status", "VmHWM:").unwrap_or(0) as f64 / 1024.0);
    Ok(())
}
