//! The quantisation bound: recall@10 of exhaustive MaxSim over decompressed token embeddings
//! against the exact top-10 over the uncompressed ones, for centroids alone and for residual
//! codecs of 1, 2 and 4 bits, Stanford-style (pooled quantile buckets) and improved
//! (per-dimension Lloyd–Max buckets), side by side.
//!
//! ```text
//! cargo run --release -p engine --example quant_bound -- [--docs N] [--clusters C] [--noise X]
//!     [--query-noise X] [--kmeans stanford,improved,pp] [--k K]
//! ```
//!
//! Every k-means variant is followed by every codec. Output is a markdown table.

use std::time::Instant;

use candle_core::{Device, Tensor};
use engine::codec::{self, BucketMethod, Codec, CodecConfig};
use engine::kmeans::{self, Init, KMeansConfig};
use engine::synth::{SynthCorpus, SynthSpec};
use rayon::prelude::*;

const TOPK: usize = 10;

/// Builds a codec config for a bit width.
type MakeCodec = fn(u32) -> CodecConfig;

struct Args {
    docs: usize,
    clusters: usize,
    noise: f32,
    query_noise: f32,
    kmeans: Vec<String>,
    k: Option<usize>,
    queries: usize,
    iters: usize,
    renorm: bool,
}

fn parse() -> Args {
    let mut a = Args {
        docs: 10_000,
        clusters: SynthSpec::clustered_10k().n_clusters,
        noise: SynthSpec::clustered_10k().noise,
        query_noise: 0.3,
        kmeans: vec!["stanford".into(), "improved".into()],
        k: None,
        queries: 100,
        iters: 20,
        renorm: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--docs" => a.docs = v.parse().expect("--docs"),
            "--clusters" => a.clusters = v.parse().expect("--clusters"),
            "--noise" => a.noise = v.parse().expect("--noise"),
            "--query-noise" => a.query_noise = v.parse().expect("--query-noise"),
            "--kmeans" => a.kmeans = v.split(',').map(str::to_string).collect(),
            "--k" => a.k = Some(v.parse().expect("--k")),
            "--queries" => a.queries = v.parse().expect("--queries"),
            "--iters" => a.iters = v.parse().expect("--iters"),
            "--renorm" => a.renorm = v.parse().expect("--renorm true|false"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Top-`TOPK` documents of each query by MaxSim over `tokens`, one matmul per query.
fn topk(queries: &[f32], qlen: usize, tokens: &[f32], doclens: &[u32], dim: usize) -> Vec<Vec<u32>> {
    let n_tok = tokens.len() / dim;
    let t = Tensor::from_slice(tokens, (n_tok, dim), &Device::Cpu).unwrap().t().unwrap();
    let mut offsets = vec![0usize];
    for &l in doclens {
        offsets.push(offsets.last().unwrap() + l as usize);
    }
    queries
        .chunks_exact(qlen * dim)
        .map(|q| {
            let qt = Tensor::from_slice(q, (qlen, dim), &Device::Cpu).unwrap();
            let s: Vec<f32> = qt.matmul(&t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let scores: Vec<f32> = offsets
                .par_windows(2)
                .map(|w| {
                    (0..qlen)
                        .map(|i| {
                            s[i * n_tok + w[0]..i * n_tok + w[1]].iter().copied().fold(f32::MIN, f32::max)
                        })
                        .sum()
                })
                .collect();
            let mut idx: Vec<u32> = (0..doclens.len() as u32).collect();
            idx.select_nth_unstable_by(TOPK, |&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
            idx.truncate(TOPK);
            idx
        })
        .collect()
}

fn recall(exact: &[Vec<u32>], approx: &[Vec<u32>]) -> f64 {
    let hits: usize = exact.iter().zip(approx).map(|(e, a)| a.iter().filter(|x| e.contains(x)).count()).sum();
    hits as f64 / (TOPK * exact.len()) as f64
}

fn normalize_rows(v: &mut [f32], dim: usize) {
    v.par_chunks_exact_mut(dim).for_each(|r| {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    });
}

fn main() {
    let args = parse();
    let spec = SynthSpec {
        n_docs: args.docs,
        n_clusters: args.clusters,
        noise: args.noise,
        ..SynthSpec::clustered_10k()
    };
    let dim = spec.dim;
    let corpus = SynthCorpus::new(spec.clone()).unwrap();
    let t0 = Instant::now();
    let all = corpus.generate_all();
    let qlen = 32;
    let queries = corpus.queries(args.queries, qlen, args.query_noise, 1);
    let n_tok = all.tokens.len() / dim;
    println!(
        "corpus: {spec:?}, {n_tok} tokens, {} queries × {qlen}, query noise {}",
        args.queries, args.query_noise
    );
    println!("generated in {:.2}s", t0.elapsed().as_secs_f64());

    let t0 = Instant::now();
    let exact = topk(&queries, qlen, &all.tokens, &all.doclens, dim);
    println!("exact top-{TOPK} in {:.2}s", t0.elapsed().as_secs_f64());

    // k-means on every document but a held-out 1/20, whose residuals train the codecs.
    let tpd = all.doclens[0] as usize; // fixed-length docs in this example
    let mut km_sample = Vec::new();
    let mut held_out = Vec::new();
    for (d, doc) in all.tokens.chunks_exact(tpd * dim).enumerate() {
        if d % 20 == 19 { &mut held_out } else { &mut km_sample }.extend_from_slice(doc);
    }
    let k = args.k.unwrap_or_else(|| kmeans::default_num_centroids(n_tok));
    println!(
        "k = {k}, k-means sample {} tokens, codec sample {} tokens",
        km_sample.len() / dim,
        held_out.len() / dim
    );
    println!();
    println!("| k-means | codec | nbits | bytes/token | recall@10 | recall@10 renorm | encode+decode s |");
    println!("|---|---|---|---|---|---|---|");

    for variant in &args.kmeans {
        let cfg = match variant.as_str() {
            // Stanford: 4 iterations of Euclidean k-means, centroids normalised afterwards.
            "stanford" => KMeansConfig { max_iters: 4, spherical: false, ..KMeansConfig::new(k) },
            "improved" => KMeansConfig { max_iters: args.iters, spherical: true, ..KMeansConfig::new(k) },
            "sph4" => KMeansConfig { max_iters: 4, spherical: true, ..KMeansConfig::new(k) },
            "pp" => KMeansConfig {
                max_iters: args.iters,
                spherical: true,
                init: Init::KMeansPlusPlus { pool: 4 * k },
                ..KMeansConfig::new(k)
            },
            other => panic!("unknown k-means variant {other}"),
        };
        let t0 = Instant::now();
        let km = kmeans::train(&km_sample, dim, &cfg).unwrap();
        let train_s = t0.elapsed().as_secs_f64();
        let mut cents = km.into_centroids();
        // Normalise (Stanford does it after training), then round to f16 as the index stores them.
        normalize_rows(&mut cents, dim);
        kmeans::round_to_f16(&mut cents);
        let t0 = Instant::now();
        let codes = kmeans::assign(&all.tokens, &cents, dim).unwrap();
        let assign_s = t0.elapsed().as_secs_f64();
        eprintln!(
            "k-means {variant}: {:.1}s train ({} vectors × {k} × {} iters: {:.2e} assignments/s); \
             assign all {n_tok} in {assign_s:.2}s ({:.2e} assignments/s)",
            train_s,
            km_sample.len() / dim,
            cfg.max_iters,
            (km_sample.len() / dim * cfg.max_iters) as f64 / train_s,
            n_tok as f64 / assign_s
        );
        let held_codes = kmeans::assign(&held_out, &cents, dim).unwrap();
        let held_res = codec::residuals(&held_out, &held_codes, &cents, dim).unwrap();

        // Centroids only.
        let mut dec = vec![0f32; all.tokens.len()];
        dec.par_chunks_exact_mut(dim).zip(codes.par_iter()).for_each(|(o, &c)| {
            o.copy_from_slice(&cents[c as usize * dim..(c as usize + 1) * dim]);
        });
        let r = recall(&exact, &topk(&queries, qlen, &dec, &all.doclens, dim));
        println!("| {variant} ({train_s:.0}s) | centroids only | 0 | 2 | {r:.3} | — | — |");

        let codecs: Vec<(&str, MakeCodec)> = vec![
            ("stanford (pooled quantile)", CodecConfig::pooled),
            ("pooled lloyd-max", |n| CodecConfig {
                nbits: n,
                per_dim: false,
                method: BucketMethod::LloydMax { iters: 20 },
                vq_iters: 0,
            }),
            ("per-dim quantile", |n| CodecConfig {
                nbits: n,
                per_dim: true,
                method: BucketMethod::Quantile,
                vq_iters: 0,
            }),
            ("per-dim lloyd-max (improved)", CodecConfig::per_dim),
            ("grouped vq (default)", CodecConfig::joint),
        ];
        for nbits in [1u32, 2, 4] {
            for (name, mk) in &codecs {
                let c = Codec::train_with(&held_res, dim, &mk(nbits)).unwrap();
                let t0 = Instant::now();
                let mut packed = Vec::new();
                c.encode_batch(&all.tokens, &codes, &cents, &mut packed).unwrap();
                let pl = c.packed_len();
                dec.par_chunks_exact_mut(dim)
                    .zip(packed.par_chunks_exact(pl))
                    .zip(codes.par_iter())
                    .for_each(|((o, p), &code)| {
                        c.decode_into(p, &cents[code as usize * dim..(code as usize + 1) * dim], o).unwrap();
                    });
                let codec_s = t0.elapsed().as_secs_f64();
                let r = recall(&exact, &topk(&queries, qlen, &dec, &all.doclens, dim));
                let rn = if args.renorm {
                    normalize_rows(&mut dec, dim);
                    format!("{:.3}", recall(&exact, &topk(&queries, qlen, &dec, &all.doclens, dim)))
                } else {
                    "—".to_string()
                };
                println!("| {variant} | {name} | {nbits} | {} | {r:.3} | {rn} | {codec_s:.2} |", pl + 2);
            }
        }
    }

    // Decode throughput on the hot path (one thread).
    let nt = n_tok.min(100_000);
    let c = Codec::train_with(&all.tokens[..dim * nt.min(10_000)], dim, &CodecConfig::per_dim(2)).unwrap();
    let cent = vec![0f32; dim];
    let mut packed = Vec::new();
    let zero_codes = vec![0u32; nt];
    c.encode_batch(&all.tokens[..dim * nt], &zero_codes, &cent, &mut packed).unwrap();
    let mut out = vec![0f32; dim];
    let mut sink = 0f32;
    for pooled in [false, true] {
        let cc = if pooled {
            Codec::train_with(&all.tokens[..dim * nt.min(10_000)], dim, &CodecConfig::pooled(2)).unwrap()
        } else {
            c.clone()
        };
        let t0 = Instant::now();
        for _ in 0..10 {
            for p in packed.chunks_exact(cc.packed_len()) {
                cc.decode_into(p, &cent, &mut out).unwrap();
                sink += out[0];
            }
        }
        let s = t0.elapsed().as_secs_f64();
        eprintln!(
            "decode nbits 2 {}: {:.1} M tokens/s/thread (sink {sink})",
            if pooled { "pooled" } else { "per-dim" },
            10.0 * nt as f64 / s / 1e6
        );
    }
}
