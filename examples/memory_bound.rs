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
//! the top 10 (PLAID mode, then WARP mode: from the stored centroid-grouped layout when the index
//! has one, `build --warp-layout`) and reranks CANDIDATES (default 1000) documents drawn at
//! random. Prints p50/p95 of each call per pass, the bytes read from disk per query
//! (`/proc/self/io`), and the peak RSS.

use std::time::{Duration, Instant};

use engine::embeddings::QueryEmbeddings;
use engine::{Index, Query, SearchMode, SearchParams};

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
    let stored = index.segments().all(|s| s.reader().warp_files().is_some());
    println!("WARP mode reads {}", if stored { "the stored layout" } else { "a layout built in memory" });
    let warp = SearchParams { mode: SearchMode::Warp, ..SearchParams::for_k(10) };
    let read = || proc_field("/proc/self/io", "read_bytes:").unwrap_or(0);
    for pass in ["cold", "warm"] {
        // Per call kind: latencies and bytes read from disk.
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        let mut bytes = [0u64; 3];
        for (q, c) in queries.queries.iter().zip(&candidates) {
            let query = Query::tokens(q, dim)?;
            for (i, (times, bytes)) in times.iter_mut().zip(bytes.iter_mut()).enumerate() {
                let (read0, t) = (read(), Instant::now());
                match i {
                    0 => drop(index.search(query, 10, &SearchParams::for_k(10))?),
                    1 => drop(index.search(query, 10, &warp)?),
                    _ => drop(index.rerank(query, c, 10)?),
                }
                times.push(t.elapsed());
                *bytes += read() - read0;
            }
        }
        let n = queries.queries.len() as f64;
        let line: Vec<String> = ["search", "WARP search", "rerank"]
            .iter()
            .zip(times.iter_mut().zip(bytes))
            .map(|(name, (t, b))| {
                format!(
                    "{name} p50 {:.2} ms p95 {:.2} ms, {:.0} KiB read",
                    pct(t, 0.5),
                    pct(t, 0.95),
                    b as f64 / 1024.0 / n
                )
            })
            .collect();
        println!("{pass} (per query): {}", line.join("; "));
    }
    println!("peak RSS {:.0} MiB", proc_field("/proc/self/status", "VmHWM:").unwrap_or(0) as f64 / 1024.0);
    Ok(())
}
