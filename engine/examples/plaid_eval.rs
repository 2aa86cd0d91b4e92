//! Compressed index and PLAID search on the clustered synthetic 10k benchmark set
//! ([`SynthSpec::clustered_10k`]: 10,000 docs × 32 tokens × 128-d, 2,000 clusters):
//! build time, bytes per token, recall@k against exact MaxSim over the uncompressed vectors,
//! pruning recall (PLAID against exhaustive search over the decompressed vectors), p50 latency
//! and QPS of one query per call.
//!
//! ```text
//! cargo run --release -p engine --example plaid_eval -- [--docs N] [--nbits 2,4] [--queries N]
//!     [--qlen N] [--k K] [--sweep] [--dir DIR]
//! ```
//!
//! `--sweep` also prints recall and latency over a grid of ncells × threshold × ndocs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::index::sample_docs;
use engine::synth::{SynthCorpus, SynthSpec};
use engine::{BuildOptions, CompressedBuilder, CompressedParams, Hit, SearchParams, Segment};

struct Args {
    docs: usize,
    nbits: Vec<u32>,
    queries: usize,
    qlen: usize,
    k: usize,
    sweep: bool,
    clusters: Option<usize>,
    dir: PathBuf,
}

fn parse() -> Args {
    let mut a = Args {
        docs: 10_000,
        nbits: vec![2, 4],
        queries: 100,
        qlen: 32,
        k: 10,
        sweep: false,
        clusters: None,
        dir: std::env::temp_dir().join(format!("plaid_eval-{}", std::process::id())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--docs" => a.docs = v().parse().expect("--docs"),
            "--nbits" => a.nbits = v().split(',').map(|x| x.parse().expect("--nbits")).collect(),
            "--queries" => a.queries = v().parse().expect("--queries"),
            "--qlen" => a.qlen = v().parse().expect("--qlen"),
            "--k" => a.k = v().parse().expect("--k"),
            "--dir" => a.dir = v().into(),
            "--sweep" => a.sweep = true,
            "--clusters" => a.clusters = Some(v().parse().expect("--clusters")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn recall(got: &[Vec<Hit>], truth: &[Vec<Hit>]) -> f64 {
    let mut hit = 0;
    let mut total = 0;
    for (g, t) in got.iter().zip(truth) {
        total += t.len();
        hit += t.iter().filter(|h| g.iter().any(|x| x.doc == h.doc)).count();
    }
    hit as f64 / total.max(1) as f64
}

/// Runs every query alone; returns the results, p50 latency (ms) and QPS.
fn timed(index: &Segment, queries: &[Vec<f32>], params: &SearchParams) -> (Vec<Vec<Hit>>, f64, f64) {
    // Warm-up (page cache, lazily initialised state).
    for q in queries.iter().take(5) {
        index.search(std::slice::from_ref(q), params).unwrap();
    }
    let mut lat = Vec::with_capacity(queries.len());
    let mut out = Vec::with_capacity(queries.len());
    let t0 = Instant::now();
    for q in queries {
        let t = Instant::now();
        out.push(index.search(std::slice::from_ref(q), params).unwrap().remove(0));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (out, lat[lat.len() / 2], queries.len() as f64 / total)
}

/// Exact top-`k` of each query by MaxSim over row-major `tokens`.
fn exact_topk(queries: &[Vec<f32>], tokens: &[f32], doclens: &[u32], dim: usize, k: usize) -> Vec<Vec<Hit>> {
    use candle_core::{Device, Tensor};
    let n_tok = tokens.len() / dim;
    let t = Tensor::from_slice(tokens, (n_tok, dim), &Device::Cpu).unwrap().t().unwrap();
    queries
        .iter()
        .map(|q| {
            let nq = q.len() / dim;
            let qt = Tensor::from_slice(q, (nq, dim), &Device::Cpu).unwrap();
            let s: Vec<f32> = qt.matmul(&t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let mut top = engine::search::TopK::new(k);
            let mut start = 0;
            for (d, &l) in doclens.iter().enumerate() {
                let l = l as usize;
                let score: f32 = s
                    .chunks_exact(n_tok)
                    .map(|row| row[start..start + l].iter().copied().fold(f32::NEG_INFINITY, f32::max))
                    .sum();
                top.push(d as u32, score);
                start += l;
            }
            top.into_sorted()
        })
        .collect()
}

fn build_compressed(dest: &Path, corpus: &SynthCorpus, nbits: u32) -> f64 {
    let spec = corpus.spec();
    let dim = spec.dim;
    let t = Instant::now();
    let params = CompressedParams { store_f16: true, ..CompressedParams::new(nbits) };
    let options = BuildOptions { overwrite: true, ..BuildOptions::default() };
    let mut b = CompressedBuilder::create(dest, dim, params, options).unwrap();
    let mut sample = Vec::new();
    let mut n_tokens = 0u64;
    for d in 0..spec.n_docs {
        n_tokens += corpus.doc_len(d) as u64;
    }
    for d in sample_docs(spec.n_docs, None, 0) {
        corpus.doc_into(d, &mut sample);
    }
    b.train(&sample, n_tokens).unwrap();
    drop(sample);
    for chunk in corpus.chunks(1000) {
        let mut off = 0;
        for (i, &l) in chunk.doclens.iter().enumerate() {
            let n = l as usize * dim;
            b.add(&(chunk.first_doc + i).to_string(), &chunk.tokens[off..off + n]).unwrap();
            off += n;
        }
    }
    b.finish().unwrap();
    t.elapsed().as_secs_f64()
}

fn main() {
    let args = parse();
    std::fs::create_dir_all(&args.dir).unwrap();
    let base = SynthSpec::clustered_10k();
    let spec = SynthSpec { n_docs: args.docs, n_clusters: args.clusters.unwrap_or(base.n_clusters), ..base };
    let corpus = SynthCorpus::new(spec.clone()).unwrap();
    let dim = spec.dim;
    let queries: Vec<Vec<f32>> = corpus
        .queries(args.queries, args.qlen, 0.3, 1)
        .chunks_exact(args.qlen * dim)
        .map(<[f32]>::to_vec)
        .collect();
    println!(
        "corpus: {} docs x {:?} tokens x {dim}-d, {} clusters, noise {}; {} queries x {} tokens; k = {}; {} threads",
        spec.n_docs,
        spec.tokens_per_doc,
        spec.n_clusters,
        spec.noise,
        args.queries,
        args.qlen,
        args.k,
        rayon::current_num_threads()
    );
    // Exact truth: MaxSim over the f16-rounded tokens (what an uncompressed index stores), one
    // matrix product per query.
    let t = Instant::now();
    let all = corpus.generate_all();
    let mut tokens = all.tokens;
    tokens.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
    let truth = exact_topk(&queries, &tokens, &all.doclens, dim, args.k);
    drop(tokens);
    let n_tokens: f64 = all.doclens.iter().map(|&l| l as f64).sum();
    println!("exact truth computed in {:.1} s", t.elapsed().as_secs_f64());
    println!();
    println!(
        "| index | mode | build s | bytes/token | recall@{k} vs exact | pruning recall | p50 ms | QPS |",
        k = args.k
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut sweeps = Vec::new();
    for &nbits in &args.nbits {
        let dir = args.dir.join(format!("nbits{nbits}"));
        let build_s = build_compressed(&dir, &corpus, nbits);
        let index = Segment::open(&dir).unwrap();
        let emb_bytes = std::fs::metadata(dir.join("embeddings.f16")).map(|m| m.len()).unwrap_or(0);
        let total = index.reader().size_bytes();
        let bpt = (total - emb_bytes) as f64 / n_tokens;
        let bpt_f16 = total as f64 / n_tokens;
        let c = index.meta().residual.unwrap().n_centroids;
        let name = format!("nbits {nbits} ({c} centroids)");
        println!("| {name} | centroid fit {:?} | | | | | | |", index.meta().build.get("centroid_fit"));
        let base = SearchParams::for_k(args.k);
        let oracle_p = SearchParams { exhaustive: true, rescore: Some(0), ..base.clone() };
        let (oracle, p50, qps) = timed(&index, &queries, &oracle_p);
        println!(
            "| {name} | exhaustive decompressed | {build_s:.1} | {bpt:.1} | {:.3} | 1.000 | {p50:.2} | {qps:.0} |",
            recall(&oracle, &truth)
        );
        let plaid_p = SearchParams { rescore: Some(0), ..base.clone() };
        let raw = SearchParams { min_centroid_fit: f32::NEG_INFINITY, ..plaid_p.clone() };
        let (r, p50, _) = timed(&index, &queries, &raw);
        println!(
            "| {name} | PLAID, no fallback | | {bpt:.1} | {:.3} | {:.3} | {p50:.2} | |",
            recall(&r, &truth),
            recall(&r, &oracle)
        );
        let (plaid, p50, qps) = timed(&index, &queries, &plaid_p);
        println!(
            "| {name} | PLAID default | | {bpt:.1} | {:.3} | {:.3} | {p50:.2} | {qps:.0} |",
            recall(&plaid, &truth),
            recall(&plaid, &oracle)
        );
        let (tier, p50, qps) = timed(&index, &queries, &base);
        println!(
            "| {name} + f16 | PLAID + exact tier | | {bpt_f16:.1} | {:.3} | — | {p50:.2} | {qps:.0} |",
            recall(&tier, &truth)
        );
        if args.sweep {
            for ncells in [1, 2, 4] {
                for thr in [0.4f32, 0.45, 0.5] {
                    for ndocs in [128, 256, 512] {
                        let p = SearchParams {
                            ncells,
                            centroid_score_threshold: thr,
                            ndocs,
                            rescore: Some(0),
                            min_centroid_fit: f32::NEG_INFINITY,
                            ..base.clone()
                        };
                        let (r, p50, _) = timed(&index, &queries, &p);
                        let pe = SearchParams { rescore: None, ..p.clone() };
                        let (re, p50e, _) = timed(&index, &queries, &pe);
                        sweeps.push(format!(
                            "| {nbits} | {ncells} | {thr} | {ndocs} | {:.3} | {:.3} | {p50:.2} | {:.3} | {p50e:.2} |",
                            recall(&r, &oracle),
                            recall(&r, &truth),
                            recall(&re, &truth)
                        ));
                    }
                }
            }
        }
    }
    if args.sweep {
        println!();
        println!("| nbits | ncells | threshold | ndocs | pruning recall | recall vs exact | p50 ms | recall + exact tier | p50 ms |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for line in sweeps {
            println!("{line}");
        }
    }
    let _ = std::fs::remove_dir_all(&args.dir);
}
