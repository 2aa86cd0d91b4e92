//! This engine and the `next-plaid` crate side by side: the same clustered synthetic embeddings,
//! the same queries, the same machine, one table.
//!
//! ```text
//! cargo bench --features peers --bench peers -- [--sets 10k,1m] [--nbits 2,4]
//!     [--engines colbert-index,colbert-index+f16,next-plaid] [--queries 100] [--dir DIR]
//! # our search knobs at other values, for equal-recall points:
//! PEERS_NCELLS=1 PEERS_NDOCS=128 PEERS_THRESHOLD=0.5 cargo bench --features peers --bench peers -- ...
//! ```
//!
//! For each set (`10k`: 10,000 docs × 32 tokens × 128-d, 2,000 clusters, noise 0.35, each
//! document drawing from 8 clusters: [`SynthSpec::clustered_10k`]; `1m`: the same with 31,250
//! docs, 1M tokens, 6,250 clusters) the corpus and 100 queries of 32
//! tokens come from [`engine::synth`] with fixed seeds, rounded to f16 (what every engine
//! stores), and the truth is exhaustive exact MaxSim over those vectors. Each engine then builds
//! its index in its own process and searches it in another (this binary re-running itself with
//! `--child`), so each peak RSS (VmHWM) belongs to one engine and one phase. Both engines get
//! the whole corpus in memory before the build clock starts (next-plaid's API takes it so).
//!
//! Searches run one query per call (p50/p95 latency, QPS) and all at once (batched QPS), k = 10,
//! at each engine's default search settings, on rayon's default thread count.
//! `colbert-index+f16` is this engine with `--store-f16` (the exact tier).
//!
//! Built only with the `peers` feature, so neither normal builds nor CI compile next-plaid.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::index::sample_docs;
use engine::synth::{SynthCorpus, SynthSpec};
use engine::{BuildOptions, CompressedBuilder, CompressedParams, Hit, IndexBuilder, SearchParams, Segment};
use ndarray::Array2;
use serde_json::{json, Value};

const K: usize = 10;
const QUERY_LEN: usize = 32;
const ENGINES: [&str; 3] = ["colbert-index", "colbert-index+f16", "next-plaid"];

/// The corpus of a named set.
fn spec(set: &str) -> SynthSpec {
    let base = SynthSpec::clustered_10k();
    match set {
        "10k" => base,
        "1m" => SynthSpec { n_docs: 31_250, n_clusters: 6_250, ..base },
        other => panic!("unknown set {other} (use 10k or 1m)"),
    }
}

fn round_f16(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
}

/// Every document of the set, f16-rounded, row-major, with its length.
fn documents(corpus: &SynthCorpus) -> Vec<Vec<f32>> {
    let dim = corpus.spec().dim;
    let all = corpus.generate_all();
    let mut out = Vec::with_capacity(all.doclens.len());
    let mut off = 0;
    for &l in &all.doclens {
        let n = l as usize * dim;
        let mut d = all.tokens[off..off + n].to_vec();
        round_f16(&mut d);
        out.push(d);
        off += n;
    }
    out
}

fn queries(corpus: &SynthCorpus, n: usize) -> Vec<Vec<f32>> {
    let dim = corpus.spec().dim;
    let mut q = corpus.queries(n, QUERY_LEN, 0.3, 1);
    round_f16(&mut q);
    q.chunks_exact(QUERY_LEN * dim).map(<[f32]>::to_vec).collect()
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn recall(got: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let hits: usize = got.iter().zip(truth).map(|(g, t)| t.iter().filter(|d| g.contains(d)).count()).sum();
    hits as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Exact top-k of every query: an uncompressed index of the f16 vectors, searched exhaustively.
fn truth(set_dir: &Path, corpus: &SynthCorpus, qs: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let path = set_dir.join("truth.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(t) = serde_json::from_str(&text) {
            return t;
        }
    }
    let dest = set_dir.join("exact");
    let options = BuildOptions { overwrite: true, ..BuildOptions::default() };
    let mut b = IndexBuilder::create(&dest, corpus.spec().dim, options).unwrap();
    for (i, d) in documents(corpus).iter().enumerate() {
        b.add(&i.to_string(), d).unwrap();
    }
    b.finish().unwrap();
    let hits = Segment::open(&dest).unwrap().search_exhaustive(qs, K).unwrap();
    let t: Vec<Vec<u32>> = hits.iter().map(|h| h.iter().map(|x| x.doc).collect()).collect();
    std::fs::write(&path, serde_json::to_string(&t).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dest);
    t
}

/// Times one query per call (after a warm-up) and then the whole batch.
fn time_queries(
    qs: &[Vec<f32>],
    mut one: impl FnMut(&[f32]) -> Vec<u32>,
    batch: impl FnOnce() -> usize,
) -> (Vec<Vec<u32>>, Vec<f64>, f64, f64) {
    for q in qs.iter().take(5) {
        one(q);
    }
    let mut lat = Vec::with_capacity(qs.len());
    let mut got = Vec::with_capacity(qs.len());
    let start = Instant::now();
    for q in qs {
        let t = Instant::now();
        got.push(one(q));
        lat.push(ms(t.elapsed()));
    }
    let qps = qs.len() as f64 / start.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = batch();
    let qps_batch = n as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (got, lat, qps, qps_batch)
}

/// One phase of one engine, in this (child) process; prints its result as one JSON line.
fn child(phase: &str, engine_name: &str, set: &str, nbits: u32, set_dir: &Path, n_queries: usize) {
    let corpus = SynthCorpus::new(spec(set)).unwrap();
    let dim = corpus.spec().dim;
    let index_dir = set_dir.join(format!("{engine_name}-nbits{nbits}"));
    let out = match (phase, engine_name) {
        ("build", "colbert-index" | "colbert-index+f16") => {
            let docs = documents(&corpus);
            let start = Instant::now();
            // PEERS_SEED: this engine's sample and k-means seed (default 0), to measure how much
            // recall moves with the centroids alone.
            let seed = std::env::var("PEERS_SEED").map_or(0, |v| v.parse::<u64>().expect("PEERS_SEED"));
            let params = CompressedParams {
                store_f16: engine_name.ends_with("+f16"),
                seed,
                ..CompressedParams::new(nbits)
            };
            let options = BuildOptions { overwrite: true, ..BuildOptions::default() };
            let mut b = CompressedBuilder::create(&index_dir, dim, params, options).unwrap();
            let sample: Vec<f32> =
                sample_docs(docs.len(), None, seed).into_iter().flat_map(|d| docs[d].clone()).collect();
            let n_tokens: usize = docs.iter().map(|d| d.len() / dim).sum();
            b.train_owned(sample, n_tokens as u64).unwrap();
            for (i, d) in docs.iter().enumerate() {
                b.add(&i.to_string(), d).unwrap();
            }
            b.finish().unwrap();
            json!({"build_s": start.elapsed().as_secs_f64()})
        }
        ("build", "next-plaid") => {
            let docs: Vec<Array2<f32>> = documents(&corpus)
                .into_iter()
                .map(|d| Array2::from_shape_vec((d.len() / dim, dim), d).unwrap())
                .collect();
            let _ = std::fs::remove_dir_all(&index_dir);
            let start = Instant::now();
            let config =
                next_plaid::IndexConfig { nbits: nbits as usize, seed: Some(42), ..Default::default() };
            next_plaid::MmapIndex::create_with_kmeans(&docs, index_dir.to_str().unwrap(), &config).unwrap();
            json!({"build_s": start.elapsed().as_secs_f64()})
        }
        ("search", "colbert-index" | "colbert-index+f16") => {
            let qs = queries(&corpus, n_queries);
            let index = Segment::open(&index_dir).unwrap();
            let mut params = SearchParams::for_k(K);
            // Knob overrides, to find our speed at a peer's recall (equal-recall comparisons).
            let knob = |name: &str| std::env::var(name).ok().map(|v| v.parse::<f64>().expect(name));
            if let Some(v) = knob("PEERS_NCELLS") {
                params.ncells = v as usize;
            }
            if let Some(v) = knob("PEERS_NDOCS") {
                params.ndocs = v as usize;
                params.scale_ndocs = false;
            }
            if let Some(v) = knob("PEERS_THRESHOLD") {
                params.centroid_score_threshold = v as f32;
            }
            let ids = |h: Vec<Hit>| h.into_iter().map(|x| x.doc).collect::<Vec<u32>>();
            let (got, lat, qps, qps_batch) = time_queries(
                &qs,
                |q| ids(index.search_one(q, &params, None).unwrap()),
                || index.search(&qs, &params).unwrap().len(),
            );
            search_result(&got, &lat, qps, qps_batch, set_dir)
        }
        ("search", "next-plaid") => {
            let qs: Vec<Array2<f32>> = queries(&corpus, n_queries)
                .into_iter()
                .map(|q| Array2::from_shape_vec((QUERY_LEN, dim), q).unwrap())
                .collect();
            let index = next_plaid::MmapIndex::load(index_dir.to_str().unwrap()).unwrap();
            let params = next_plaid::SearchParameters { top_k: K, ..Default::default() };
            let flat: Vec<Vec<f32>> = qs.iter().map(|q| q.iter().copied().collect()).collect();
            let (got, lat, qps, qps_batch) = time_queries(
                &flat,
                |q| {
                    let q = Array2::from_shape_vec((QUERY_LEN, dim), q.to_vec()).unwrap();
                    let r = index.search(&q, &params, None).unwrap();
                    r.passage_ids.iter().map(|&d| d as u32).collect()
                },
                || index.search_batch(&qs, &params, true, None).unwrap().len(),
            );
            search_result(&got, &lat, qps, qps_batch, set_dir)
        }
        other => panic!("unknown child phase {other:?}"),
    };
    let mut out = out;
    out["peak_rss"] = json!(peak_rss());
    out["index_bytes"] = json!(dir_bytes(&index_dir));
    println!("RESULT {out}");
}

fn search_result(got: &[Vec<u32>], lat: &[f64], qps: f64, qps_batch: f64, set_dir: &Path) -> Value {
    let truth: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(set_dir.join("truth.json")).unwrap()).unwrap();
    json!({
        "p50_ms": pct(lat, 0.5),
        "p95_ms": pct(lat, 0.95),
        "qps": qps,
        "qps_batch": qps_batch,
        "recall": recall(got, &truth),
    })
}

/// Runs this binary as a child for one phase and returns its JSON result (with `error` set when
/// the child failed, so that one engine's failure does not lose the others' rows).
fn spawn(phase: &str, engine_name: &str, set: &str, nbits: u32, set_dir: &Path, n_queries: usize) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--child", phase, engine_name, set, &nbits.to_string(), &n_queries.to_string()])
        .arg(set_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    match line {
        Some(l) if out.status.success() => serde_json::from_str(l).unwrap(),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            eprintln!("{engine_name} {phase} failed ({}):\n{stdout}\n{err}", out.status);
            json!({"error": err.lines().last().unwrap_or("failed")})
        }
    }
}

struct Args {
    sets: Vec<String>,
    nbits: Vec<u32>,
    engines: Vec<String>,
    queries: usize,
    dir: PathBuf,
    json: bool,
}

fn parse() -> Args {
    let mut a = Args {
        sets: vec!["10k".into(), "1m".into()],
        nbits: vec![2, 4],
        engines: ENGINES.iter().map(|s| s.to_string()).collect(),
        queries: 100,
        dir: std::env::temp_dir().join("colbert-index-peers"),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let list = |s: String| s.split(',').map(str::to_string).collect::<Vec<_>>();
        match flag.as_str() {
            "--bench" => {}
            "--sets" => a.sets = list(v()),
            "--nbits" => a.nbits = list(v()).iter().map(|x| x.parse().expect("--nbits")).collect(),
            "--engines" => a.engines = list(v()),
            "--queries" => a.queries = v().parse().expect("--queries"),
            "--dir" => a.dir = v().into(),
            "--json" => a.json = true,
            other => panic!("unknown flag {other}"),
        }
    }
    for e in &a.engines {
        assert!(ENGINES.contains(&e.as_str()), "unknown engine {e} (use {})", ENGINES.join(", "));
    }
    a
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--child") {
        let [_, _, phase, engine_name, set, nbits, nq, dir] = &argv[..] else {
            panic!("bad child arguments")
        };
        child(phase, engine_name, set, nbits.parse().unwrap(), Path::new(dir), nq.parse().unwrap());
        return;
    }
    let args = parse();
    let mut rows = Vec::new();
    for set in &args.sets {
        let corpus = SynthCorpus::new(spec(set)).unwrap();
        let set_dir = args.dir.join(set);
        std::fs::create_dir_all(&set_dir).unwrap();
        let qs = queries(&corpus, args.queries);
        let t = Instant::now();
        truth(&set_dir, &corpus, &qs);
        eprintln!("{set}: exact truth ready ({:.1} s)", t.elapsed().as_secs_f64());
        for &nbits in &args.nbits {
            for e in &args.engines {
                let build = spawn("build", e, set, nbits, &set_dir, args.queries);
                eprintln!(
                    "{set} {e} nbits {nbits}: built in {:.1} s",
                    build["build_s"].as_f64().unwrap_or(0.0)
                );
                let search = spawn("search", e, set, nbits, &set_dir, args.queries);
                let _ = std::fs::remove_dir_all(set_dir.join(format!("{e}-nbits{nbits}")));
                let row = json!({"set": set, "engine": e, "nbits": nbits, "build": build, "search": search});
                eprintln!("{row}");
                rows.push(row);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    println!(
        "{} threads; k = {K}; {} queries x {QUERY_LEN} tokens; recall@{K} against exhaustive exact MaxSim",
        rayon::current_num_threads(),
        args.queries
    );
    println!();
    println!("| set | engine | nbits | QPS | QPS batched | p50 ms | p95 ms | recall@{K} | build s | index MB | build peak RSS MB | search peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for r in &rows {
        let (b, s) = (&r["build"], &r["search"]);
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.3} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r["set"].as_str().unwrap_or(""),
            r["engine"].as_str().unwrap_or(""),
            r["nbits"],
            f(&s["qps"]),
            f(&s["qps_batch"]),
            f(&s["p50_ms"]),
            f(&s["p95_ms"]),
            f(&s["recall"]),
            f(&b["build_s"]),
            f(&b["index_bytes"]) / 1e6,
            f(&b["peak_rss"]) / 1e6,
            f(&s["peak_rss"]) / 1e6,
        );
    }
}
