//! Cross-encoder throughput: pairs scored per second on query/document pairs built from a BEIR
//! collection (default: the bundled Cranfield), the same pairs as
//! `tools/fixtures/bench_torch_cross.py` scores with PyTorch.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p engine --example cross_bench -- CHECKPOINT [N_PAIRS] [BATCH] [REPEATS] [DATA_DIR] [f32|bf16|auto]
//! ```
//! Pair `i` is query `i mod n_queries` with document `(7 i) mod n_docs` (title and text joined
//! as `title. text`), truncated longest-first to the model's limit. Prints the best of REPEATS
//! runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::corpus::{read_queries, CorpusReader};
use engine::encoder::Precision;
use engine::rerank::{CrossEncoder, CrossEncoderOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: cross_bench CHECKPOINT [N_PAIRS] [BATCH] [REPEATS] [DATA_DIR] [f32|bf16|auto]");
        std::process::exit(2);
    }
    let ckpt = PathBuf::from(&args[1]);
    let n: usize = args.get(2).map_or(512, |s| s.parse().expect("N_PAIRS"));
    let batch: usize = args.get(3).map_or(16, |s| s.parse().expect("BATCH"));
    let repeats: usize = args.get(4).map_or(3, |s| s.parse().expect("REPEATS"));
    let data = args
        .get(5)
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/cranfield"), PathBuf::from);
    let queries: Vec<String> =
        read_queries(&data.join("queries.jsonl")).expect("queries").into_iter().map(|r| r.text).collect();
    let docs: Vec<String> = CorpusReader::open(&data.join("corpus.jsonl"))
        .expect("corpus")
        .map(|r| r.expect("corpus record").full_text())
        .collect();
    let pairs: Vec<(&str, &str)> =
        (0..n).map(|i| (queries[i % queries.len()].as_str(), docs[(7 * i) % docs.len()].as_str())).collect();
    let precision = match args.get(6).map(String::as_str) {
        None | Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some("auto") => Precision::Auto,
        Some(other) => panic!("precision must be f32, bf16 or auto, not {other}"),
    };
    let ce =
        CrossEncoder::load(&ckpt, CrossEncoderOptions { batch_size: batch, precision, ..Default::default() })
            .expect("load cross-encoder");
    let tokens: usize = pairs.iter().map(|(q, d)| ce.tokenize_pair(q, d).unwrap().0.len()).sum();
    ce.score_pairs(&pairs[..pairs.len().min(batch)]).expect("warm-up");
    let mut best = f64::INFINITY;
    let mut checksum = 0f64;
    for _ in 0..repeats {
        let t = Instant::now();
        let scores = ce.score_pairs(&pairs).expect("score");
        best = best.min(t.elapsed().as_secs_f64());
        checksum = scores.iter().map(|&s| f64::from(s)).sum();
    }
    println!(
        "ours ({:?}): {n} pairs ({tokens} tokens, max_length {}), batch {batch}, {} threads: {:.1} pairs/s \
         ({:.0} tokens/s), best of {repeats}: {:.3}s; sum of logits {checksum:.4}",
        precision.effective(&engine::Kernels::auto()),
        ce.max_length(),
        rayon::current_num_threads(),
        n as f64 / best,
        tokens as f64 / best,
        best
    );
}
