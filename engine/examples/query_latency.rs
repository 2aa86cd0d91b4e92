//! Query encoding latency: each query of a collection encoded alone (as an interactive search
//! does), on the calling thread's pool, with percentiles.
//!
//! ```text
//! cargo run --release -p engine --example query_latency -- MODEL_DIR QUERIES [N] [f32|bf16]
//! ```
//! QUERIES: BEIR `queries.jsonl` or TSV `qid<TAB>text`. Prints p50 / p90 / p99 / mean in ms.

use std::path::PathBuf;
use std::time::Instant;

use engine::encoder::{Encoder, EncoderOptions, Precision};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: query_latency MODEL_DIR QUERIES [N] [f32|bf16]");
        std::process::exit(2);
    }
    let model = PathBuf::from(&args[1]);
    let queries: Vec<String> = engine::corpus::read_queries(std::path::Path::new(&args[2]))
        .expect("read queries")
        .into_iter()
        .map(|r| r.text)
        .collect();
    let n: usize = args.get(3).map_or(queries.len(), |s| s.parse().expect("N"));
    let precision = match args.get(4).map(String::as_str) {
        None | Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some(other) => panic!("precision must be f32 or bf16, not {other}"),
    };
    let enc = Encoder::load(&model, EncoderOptions { precision, ..Default::default() }).expect("load model");
    let queries = &queries[..n.min(queries.len())];
    enc.encode_queries(&[queries[0].as_str()]).expect("warm-up");
    let mut ms: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            enc.encode_queries(&[q.as_str()]).expect("encode");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{} queries one at a time, {} ({}), {} threads: p50 {:.2} ms, p90 {:.2}, p99 {:.2}, mean {:.2}",
        ms.len(),
        model.display(),
        enc.kernel(),
        rayon::current_num_threads(),
        at(0.5),
        at(0.9),
        at(0.99),
        ms.iter().sum::<f64>() / ms.len() as f64
    );
}
