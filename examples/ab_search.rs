//! A/B search latency of two indexes of the same corpus, interleaved query by query in one
//! process on one thread, so that a noisy machine slows both sides alike.
//!
//! `cargo run --release --example ab_search -- A_INDEX B_INDEX QUERIES.safetensors [ROUNDS]`
//!
//! Every round searches each query on A then B (odd rounds B then A) with the default k = 10
//! parameters and per-stage timing, after one warm-up round. Prints, per side, the median and
//! mean per-query latency and the mean per stage, then the median over queries of the B/A ratio
//! of each query's median latency, and checks that both sides return the same hits.

use std::time::Instant;

use engine::embeddings::QueryEmbeddings;
use engine::search::StageTimes;
use engine::{SearchParams, Segment};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: ab_search A_INDEX B_INDEX QUERIES.safetensors [ROUNDS]");
        std::process::exit(2);
    }
    let rounds: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(20);
    let a = Segment::open(args[1].as_ref()).expect("open A");
    let b = Segment::open(args[2].as_ref()).expect("open B");
    let queries = QueryEmbeddings::open(args[3].as_ref()).expect("queries").queries;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let params = SearchParams::for_k(10);
    let n = queries.len();
    let mut times = [vec![Vec::new(); n], vec![Vec::new(); n]];
    let mut stages = [StageTimes::default(), StageTimes::default()];
    pool.install(|| {
        for (q, query) in queries.iter().enumerate() {
            let (ha, hb) =
                (a.search_one(query, &params, None).unwrap(), b.search_one(query, &params, None).unwrap());
            assert_eq!(ha, hb, "query {q}: the two indexes answer differently");
        }
        for round in 0..rounds {
            for (q, query) in queries.iter().enumerate() {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for side in order {
                    let index = if side == 0 { &a } else { &b };
                    let start = Instant::now();
                    std::hint::black_box(index.search_one(query, &params, Some(&mut stages[side])).unwrap());
                    times[side][q].push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    });
    let total = (rounds * n) as f64;
    let mut per_query = [Vec::new(), Vec::new()];
    for side in 0..2 {
        let name = if side == 0 { "A" } else { "B" };
        let mut all: Vec<f64> = times[side].iter().flatten().copied().collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let s = &stages[side];
        println!(
            "{name} {}: median {:.3} ms, mean {:.3} ms; stage means: candidates {:.3}, pruning {:.3}, maxsim {:.3}",
            args[side + 1],
            median(&mut all),
            mean,
            s.candidates.as_secs_f64() * 1e3 / total,
            s.pruning.as_secs_f64() * 1e3 / total,
            s.maxsim.as_secs_f64() * 1e3 / total,
        );
        per_query[side] = times[side].iter().map(|t| median(&mut t.clone())).collect();
    }
    let mut ratios: Vec<f64> = per_query[1].iter().zip(&per_query[0]).map(|(b, a)| b / a).collect();
    println!(
        "B/A per-query median latency ratio: median {:.4} over {n} queries × {rounds} rounds",
        median(&mut ratios)
    );
}
