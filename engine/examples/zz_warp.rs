use engine::embeddings::QueryEmbeddings;
use engine::{Index, Query, SearchMode, SearchParams};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let index = Index::open(&args[1]).unwrap();
    let queries = QueryEmbeddings::open(args[2].as_ref()).unwrap();
    let mode = if args[3] == "warp" { SearchMode::Warp } else { SearchMode::Plaid };
    let nprobe: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(16);
    let rounds: usize = args.get(5).and_then(|r| r.parse().ok()).unwrap_or(5);
    let resc: usize = args.get(6).and_then(|r| r.parse().ok()).unwrap_or(64);
    let tp: usize = args.get(7).and_then(|r| r.parse().ok()).unwrap_or(10000);
    let p = SearchParams {
        mode,
        nprobe: (nprobe > 0).then_some(nprobe),
        warp_rescore: (resc < 99999).then_some(resc),
        warp_t_prime: tp,
        ..SearchParams::for_k(10)
    };
    let t0 = Instant::now();
    let _ = index.search(Query::tokens(&queries.queries[0], queries.dim).unwrap(), 10, &p).unwrap();
    eprintln!("first query {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    let truth: Vec<Vec<String>> = match args.get(9) {
        Some(path) => {
            let mut t = vec![Vec::new(); queries.queries.len()];
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let q: usize = f[0].parse().unwrap();
                if t[q].len() < 10 {
                    t[q].push(f[2].to_string());
                }
            }
            t
        }
        None => Vec::new(),
    };
    let mut hits = 0usize;
    let mut times = Vec::new();
    for r in 0..rounds {
        for q in &queries.queries {
            let t = Instant::now();
            let out = index.search(Query::tokens(q, queries.dim).unwrap(), 10, &p).unwrap();
            if r > 0 || rounds == 1 {
                times.push(t.elapsed().as_secs_f64());
            }
            if r == 0 && !truth.is_empty() {
                let qi = times.len().max(1) - 1;
                let _ = qi;
            }
            if r == rounds - 1 && !truth.is_empty() {
                let qi = queries.queries.iter().position(|x| std::ptr::eq(x, q)).unwrap();
                hits += out.iter().filter(|h| truth[qi].contains(&h.id)).count();
            }
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "p50 {:.3} ms recall {:.4}",
        times[times.len() / 2] * 1e3,
        hits as f64 / (10 * queries.queries.len()) as f64
    );
}
