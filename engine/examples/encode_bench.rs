//! Encoding throughput on real documents: the `.W` fields of a SMART-format collection (Cranfield's
//! `cran.all.1400`, Latin-1), encoded as documents in the model's mode.
//!
//! ```text
//! cargo run --release -p engine --example encode_bench -- MODEL_DIR COLLECTION [N_DOCS] [BATCH] [REPEATS] [f32|bf16|auto]
//! ```
//! Prints tokens/s (input tokens, special tokens included) for the best of REPEATS runs. In bf16 it
//! then encodes the documents again in f32 and prints the per-token cosine between the two; set
//! `NO_REF=1` to skip that pass (when profiling). Compare with
//! `tools/fixtures/bench_torch_encode.py`, which encodes the same documents with PyTorch.

use std::path::PathBuf;
use std::time::Instant;

use engine::encoder::{Encoder, EncoderOptions, Precision, TextKind};

/// Reads the `.W` (abstract) fields of a SMART collection; bytes are Latin-1.
fn smart_abstracts(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("read collection");
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let mut docs = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('.') && line.len() >= 2 && line.as_bytes()[1].is_ascii_uppercase() {
            if let Some(doc) = current.take() {
                docs.push(doc.trim().to_string());
            }
            if line.starts_with(".W") {
                current = Some(String::new());
            }
        } else if let Some(doc) = current.as_mut() {
            doc.push_str(line);
            doc.push(' ');
        }
    }
    docs.extend(current.map(|d| d.trim().to_string()));
    docs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: encode_bench MODEL_DIR COLLECTION [N_DOCS] [BATCH] [REPEATS] [f32|bf16|auto]");
        std::process::exit(2);
    }
    let model = PathBuf::from(&args[1]);
    let n: usize = args.get(3).map_or(256, |s| s.parse().expect("N_DOCS"));
    let batch: usize = args.get(4).map_or(32, |s| s.parse().expect("BATCH"));
    let repeats: usize = args.get(5).map_or(3, |s| s.parse().expect("REPEATS"));
    let docs = smart_abstracts(std::path::Path::new(&args[2]));
    let docs: Vec<&str> = docs.iter().take(n).map(String::as_str).collect();
    let precision = match args.get(6).map(String::as_str) {
        None | Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some("auto") => Precision::Auto,
        Some(other) => panic!("precision must be f32, bf16 or auto, not {other}"),
    };
    let enc = Encoder::load(&model, EncoderOptions { batch_size: batch, precision, ..Default::default() })
        .expect("load model");
    let tokens: usize =
        docs.iter().map(|d| enc.tokenizer().tokenize(d, TextKind::Document).unwrap().ids.len()).sum();
    enc.encode_documents(&docs[..docs.len().min(batch)]).expect("warm-up");
    let mut best = f64::INFINITY;
    let mut kept = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let out = enc.encode_documents(&docs).expect("encode");
        best = best.min(t.elapsed().as_secs_f64());
        kept = out.iter().map(|v| v.len() / enc.dim()).sum();
    }
    if precision.effective(&engine::Kernels::auto()) != Precision::F32 && std::env::var_os("NO_REF").is_none()
    {
        // How far the bf16 embeddings are from the f32 reference: cosine per token.
        let reference = Encoder::load(&model, EncoderOptions { batch_size: batch, ..Default::default() })
            .expect("load model")
            .encode_documents(&docs)
            .expect("encode");
        let fast = enc.encode_documents(&docs).expect("encode");
        let dim = enc.dim();
        let cosines: Vec<f32> = reference
            .iter()
            .zip(&fast)
            .flat_map(|(r, f)| {
                r.chunks(dim).zip(f.chunks(dim)).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
            })
            .collect();
        let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
        let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
        println!("bf16 vs f32 embeddings: cosine mean {mean:.6}, min {min:.6} over {} tokens", cosines.len());
    }
    println!(
        "ours ({:?}, {}): {} docs, {tokens} tokens ({kept} kept), batch {batch}, {} threads: {best:.3} s, {:.0} tokens/s",
        precision.effective(&engine::Kernels::auto()),
        enc.kernel(),
        docs.len(),
        rayon::current_num_threads(),
        tokens as f64 / best
    );
}
