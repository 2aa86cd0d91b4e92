use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::*;

/// Writes a small clustered corpus and its queries with `synth`.
fn synth(dir: &Path, name: &str, seed: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let docs = dir.join(format!("{name}.safetensors"));
    let queries = dir.join(format!("{name}-q.safetensors"));
    cli_ok(&[
        "synth",
        "--out",
        s(&docs),
        "--queries-out",
        s(&queries),
        "--docs",
        "400",
        "--tokens-per-doc",
        "6",
        "--max-tokens-per-doc",
        "20",
        "--dim",
        "32",
        "--clusters",
        "60",
        "--clusters-per-doc",
        "3",
        "--seed",
        seed,
        "--n-queries",
        "6",
        "--query-len",
        "8",
    ]);
    (docs, queries)
}

fn build(docs: &Path, index: &Path) {
    cli_ok(&[
        "build",
        "--embeddings",
        s(docs),
        "--index",
        s(index),
        "--nbits",
        "2",
        "--centroids",
        "64",
        "--seed",
        "5",
    ]);
}

/// `search --json` with a given rayon thread count.
fn search(index: &Path, queries: &Path, threads: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_colbert-index"))
        .args(["search", "--index", s(index), "--query-embeddings", s(queries), "-k", "10", "--json"])
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn bench(index: &Path, queries: &Path, extra: &[&str]) -> Value {
    let base = ["bench", "--index", s(index), "--query-embeddings", s(queries), "--threads", "1", "--json"];
    serde_json::from_str(&cli_ok(&[&base[..], extra].concat())).unwrap()
}

#[test]
fn synth_files_feed_build_and_bench_reports_every_stage_and_a_sweep() {
    let dir = TempDir::new().unwrap();
    let (docs, queries) = synth(dir.path(), "a", "3");
    let f = engine::embeddings::DocEmbeddingsFile::open(&docs).unwrap();
    assert_eq!((f.n_docs(), f.dim()), (400, 32));
    assert!(f.doclens().iter().all(|&l| (6..=20).contains(&l)));
    let index = dir.path().join("idx");
    build(&docs, &index);
    let svg = dir.path().join("sweep.svg");
    let r = bench(
        &index,
        &queries,
        &[
            "--overhead-rounds",
            "2",
            "--sweep",
            "--sweep-ncells",
            "1,2",
            "--sweep-thresholds",
            "0.4",
            "--sweep-ndocs",
            "16,128",
            "--svg",
            s(&svg),
        ],
    );
    let run = &r["runs"][0];
    // The default mode, resolved to PLAID on an index without the stored WARP layout.
    assert_eq!((&run["mode"], &run["runs_as"]), (&json!("auto"), &json!("plaid")));
    let stages = &run["stages"];
    for name in ["candidates", "pruning", "maxsim", "tail", "search", "total"] {
        assert!(stages[name]["p50_ms"].as_f64().unwrap() >= 0.0, "stage {name}");
    }
    assert!(stages.get("encode").is_none(), "no encoding for query embeddings");
    assert!(stages["candidates"]["mean_ms"].as_f64().unwrap() > 0.0);
    assert!(stages["maxsim"]["mean_ms"].as_f64().unwrap() > 0.0);
    // The stages happen inside the timed call: their means cannot add up to more than it.
    let sum: f64 = ["candidates", "pruning", "maxsim", "tail"]
        .iter()
        .map(|n| stages[*n]["mean_ms"].as_f64().unwrap())
        .sum();
    assert!(sum <= stages["search"]["mean_ms"].as_f64().unwrap() + 1e-9);
    let recall = run["recall_at_k"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&recall));
    let o = &r["harness_overhead"];
    assert_eq!(o["rounds"], 2);
    assert!(o["clock_fraction"].as_f64().unwrap() > 0.0);
    let points = r["sweep"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert!(points.iter().any(|p| p["pareto"] == true));
    let svg = std::fs::read_to_string(&svg).unwrap();
    for p in points {
        let label = format!("nc{} t{} nd{}", p["ncells"], p["threshold"], p["ndocs"]);
        assert!(svg.contains(&label), "SVG lacks {label}");
    }
    // The table form prints the stages too.
    let table = cli_ok(&[
        "bench",
        "--index",
        s(&index),
        "--query-embeddings",
        s(&queries),
        "--threads",
        "1",
        "--overhead-rounds",
        "0",
    ]);
    assert!(
        table.contains("candidates") && table.contains("maxsim") && table.contains("recall@k"),
        "{table}"
    );
    // Both modes side by side, and recall against a given run: PLAID's own run at the same
    // settings is found in full.
    let run_file = dir.path().join("plaid.run");
    std::fs::write(&run_file, cli_ok(&["search", "--index", s(&index), "--query-embeddings", s(&queries)]))
        .unwrap();
    let both = bench(
        &index,
        &queries,
        &["--overhead-rounds", "0", "--modes", "plaid,warp", "--truth", s(&run_file)],
    );
    let runs = both["runs"].as_array().unwrap();
    let modes: Vec<&str> = runs.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["plaid", "warp"]);
    assert_eq!(runs[0]["recall_vs_truth"].as_f64(), Some(1.0));
    assert!((0.5..=1.0).contains(&runs[1]["recall_vs_truth"].as_f64().unwrap()), "{}", runs[1]);
    // Bad input: a sweep of an uncompressed index, an existing synth output.
    let flat = dir.path().join("flat");
    cli_ok(&["build", "--embeddings", s(&docs), "--index", s(&flat), "--nbits", "16"]);
    cli_err(
        &["bench", "--index", s(&flat), "--query-embeddings", s(&queries), "--threads", "1", "--sweep"],
        &["compressed"],
    );
    cli_err(&["synth", "--out", s(&docs)], &["already exists", "a.safetensors"]);
}

#[test]
fn the_same_seed_and_index_give_the_same_recall_and_rankings() {
    let dir = TempDir::new().unwrap();
    let (docs_a, q_a) = synth(dir.path(), "a", "11");
    let (docs_b, q_b) = synth(dir.path(), "b", "11");
    let (docs_c, _) = synth(dir.path(), "c", "12");
    assert_eq!(std::fs::read(&docs_a).unwrap(), std::fs::read(&docs_b).unwrap());
    assert_eq!(std::fs::read(&q_a).unwrap(), std::fs::read(&q_b).unwrap());
    assert_ne!(std::fs::read(&docs_a).unwrap(), std::fs::read(&docs_c).unwrap());
    let (ia, ib) = (dir.path().join("ia"), dir.path().join("ib"));
    build(&docs_a, &ia);
    build(&docs_b, &ib);
    let first = search(&ia, &q_a, "1");
    assert_eq!(first.lines().count(), 6);
    assert_eq!(first, search(&ia, &q_a, "2"), "rankings depend on the thread count");
    assert_eq!(first, search(&ib, &q_b, "1"), "a rebuilt index ranks differently");
    let sweep = [
        "--overhead-rounds",
        "0",
        "--sweep",
        "--sweep-ncells",
        "1",
        "--sweep-thresholds",
        "0.45",
        "--sweep-ndocs",
        "16,64",
    ];
    let svg = dir.path().join("s.svg");
    let mut extra = sweep.to_vec();
    extra.extend(["--svg", s(&svg)]);
    let (ra, rb) = (bench(&ia, &q_a, &extra), bench(&ib, &q_b, &extra));
    assert_eq!(ra["runs"][0]["recall_at_k"], rb["runs"][0]["recall_at_k"]);
    let recalls = |r: &Value| {
        r["sweep"]["points"].as_array().unwrap().iter().map(|p| p["recall"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(recalls(&ra), recalls(&rb));
}
