//! Speed of the listwise LLM reranker with a local GGUF model, f32 weights against quantized ones.
//!
//! ```text
//! cargo run --release -p engine --example llm_bench -- MODEL.gguf CRANFIELD_DIR [QUERIES] [PASSAGES] [MODES]
//! ```
//! For each weight mode (`MODES`: comma-separated `f32`, `quantized`; default both) the model is
//! loaded once, then the first `QUERIES` (default 2) Cranfield queries are reranked, each over
//! `PASSAGES` (default 20) documents — its judged-relevant ones first, then the collection's first
//! others, in a fixed shuffled order — with one window of that size (one LLM call per query).
//! Prints the load time, prompt tokens/s (prompt processing, which dominates), answer tokens/s
//! (greedy decoding) and the answers' repairs.

use std::path::Path;
use std::time::{Duration, Instant};

use engine::collections::read_cranfield;
use engine::rerank::llm::{GgufChat, GgufOptions, ListwiseConfig, ListwiseReranker, WeightMode};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: llm_bench MODEL.gguf CRANFIELD_DIR [QUERIES] [PASSAGES] [MODES]");
        std::process::exit(2);
    }
    let queries: usize = args.get(3).map_or(2, |s| s.parse().expect("QUERIES"));
    let passages: usize = args.get(4).map_or(20, |s| s.parse().expect("PASSAGES"));
    let modes = args.get(5).map_or("f32,quantized", String::as_str);
    let coll = read_cranfield(Path::new(&args[2])).expect("read Cranfield");
    let cases: Vec<(String, Vec<String>)> = coll
        .queries
        .iter()
        .take(queries)
        .map(|q| {
            let judged = coll.qrels.query(&q.id);
            let relevant = |id: &str| judged.is_some_and(|j| j.get(id).is_some_and(|&r| r > 0));
            let mut docs: Vec<&str> = coll
                .documents
                .iter()
                .filter(|d| relevant(&d.id))
                .map(|d| d.text.as_str())
                .take(passages / 2)
                .collect();
            docs.extend(coll.documents.iter().filter(|d| !relevant(&d.id)).map(|d| d.text.as_str()));
            docs.truncate(passages);
            // A fixed interleaving so that relevant passages are not all at the top.
            let mut order: Vec<usize> = (0..docs.len()).collect();
            order.sort_by_key(|&i| (i * 7919) % docs.len().max(1));
            (q.text.clone(), order.iter().map(|&i| docs[i].to_string()).collect())
        })
        .collect();
    for mode in modes.split(',') {
        let weights = match mode {
            "f32" => WeightMode::F32,
            "quantized" => WeightMode::Quantized,
            other => panic!("unknown mode {other}"),
        };
        let t = Instant::now();
        let model = GgufChat::load(Path::new(&args[1]), GgufOptions { weights }).expect("load model");
        let load = t.elapsed();
        println!("{mode}: {} loaded in {:.2} s", model_description(&model), load.as_secs_f64());
        let config = ListwiseConfig { window: passages, step: passages.div_ceil(2), ..Default::default() };
        let mut rr = ListwiseReranker::new(model, config).expect("reranker");
        let (mut prompt_tokens, mut answer_tokens) = (0, 0);
        let (mut prompt_time, mut total) = (Duration::ZERO, Duration::ZERO);
        for (query, docs) in &cases {
            let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let out = rr.rerank(query, &docs).expect("rerank");
            println!(
                "  query {:?}: {} prompt + {} answer tokens in {:.2} s (prompt {:.2} s), repairs {:?}, order {:?}",
                query.chars().take(40).collect::<String>(),
                out.prompt_tokens,
                out.answer_tokens,
                out.elapsed.as_secs_f64(),
                out.prompt_time.as_secs_f64(),
                out.repairs,
                out.order
            );
            prompt_tokens += out.prompt_tokens;
            answer_tokens += out.answer_tokens;
            prompt_time += out.prompt_time;
            total += out.elapsed;
        }
        let decode = total.saturating_sub(prompt_time).as_secs_f64();
        println!(
            "{mode}: prompt {:.1} tokens/s ({prompt_tokens} tokens in {:.2} s), answer {:.1} tokens/s \
             ({answer_tokens} tokens in {decode:.2} s), {:.2} s per query",
            prompt_tokens as f64 / prompt_time.as_secs_f64(),
            prompt_time.as_secs_f64(),
            answer_tokens as f64 / decode.max(1e-9),
            total.as_secs_f64() / cases.len().max(1) as f64
        );
    }
}

fn model_description(model: &GgufChat) -> String {
    use engine::rerank::llm::ChatBackend;
    model.describe()
}
