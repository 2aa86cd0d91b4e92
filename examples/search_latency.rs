//! Query latency and batched throughput of the embedded ranker (`engine::Index`), the Rust side
//! of the Python package's overhead measurement (`tools/python-overhead.sh`).
//!
//! `cargo run --release --example search_latency -- INDEX QUERIES.safetensors [ROUNDS] [K]`
//!
//! After one warm-up pass, searches every query one at a time for ROUNDS rounds (default 5) and
//! prints the median per-query latency, then times ROUNDS batched searches of all queries
//! (`Index::search_batch`, all cores) and prints the best batch's queries per second. Output is
//! one JSON line.

use std::time::Instant;

use engine::embeddings::QueryEmbeddings;
use engine::{Index, Query, SearchParams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: search_latency INDEX QUERIES.safetensors [ROUNDS] [K]");
        std::process::exit(2);
    }
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5);
    let k: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(10);
    let index = Index::open(&args[1]).unwrap_or_else(|e| fail(&e));
    let queries = QueryEmbeddings::open(args[2].as_ref()).unwrap_or_else(|e| fail(&e));
    let queries: Vec<Query<'_>> =
        queries.queries.iter().map(|q| Query::tokens(q, queries.dim).unwrap_or_else(|e| fail(&e))).collect();
    let params = SearchParams::for_k(k);
    let mut single = Vec::with_capacity(rounds * queries.len());
    for round in 0..=rounds {
        for &q in &queries {
            let start = Instant::now();
            let hits = index.search(q, k, &params).unwrap_or_else(|e| fail(&e));
            std::hint::black_box(hits);
            if round > 0 {
                single.push(start.elapsed().as_secs_f64());
            }
        }
    }
    single.sort_by(f64::total_cmp);
    let mut best_batch = f64::INFINITY;
    for _ in 0..=rounds {
        let start = Instant::now();
        std::hint::black_box(index.search_batch(&queries, k, &params).unwrap_or_else(|e| fail(&e)));
        best_batch = best_batch.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{{\"side\": \"rust\", \"queries\": {}, \"p50_ms\": {:.4}, \"batch_qps\": {:.1}}}",
        queries.len(),
        single[single.len() / 2] * 1e3,
        queries.len() as f64 / best_batch
    );
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}
