use std::fs;

use safetensors::Dtype;
use tempfile::TempDir;

use crate::common::*;

const DIM: usize = 16;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    /// 40 documents of 1..12 tokens, dim 16, and 3 queries of 5 tokens.
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let (emb, lens) = random_docs(7, 40, 12, DIM);
        write_embeddings(&dir.path().join("docs.safetensors"), &emb, DIM, &lens, Dtype::F32);
        let q = unit_vectors(&mut Rng::new(99), 3 * 5, DIM);
        write_queries(&dir.path().join("q.safetensors"), &q, 5, DIM);
        Self { dir }
    }
    fn p(&self, name: &str) -> String {
        s(&self.dir.path().join(name)).to_owned()
    }
    fn build(&self) -> String {
        let idx = self.p("idx");
        cli_ok(&["build", "--embeddings", &self.p("docs.safetensors"), "--index", &idx, "--nbits", "16"]);
        idx
    }
}

#[test]
fn build_search_info_verify_round_trip() {
    let f = Fixture::new();
    let idx = f.build();
    let run = cli_ok(&["search", "--index", &idx, "--query-embeddings", &f.p("q.safetensors"), "-k", "5"]);
    let lines: Vec<&str> = run.lines().collect();
    assert_eq!(lines.len(), 15);
    for (i, line) in lines.iter().enumerate() {
        let cols: Vec<&str> = line.split(' ').collect();
        assert_eq!(cols.len(), 6, "{line}");
        assert_eq!(cols[0], (i / 5).to_string());
        assert_eq!(cols[1], "Q0");
        assert_eq!(cols[3], (i % 5 + 1).to_string());
        assert_eq!(cols[5], "colbert-index");
    }
    let json = cli_ok(&[
        "search",
        "--index",
        &idx,
        "--query-embeddings",
        &f.p("q.safetensors"),
        "-k",
        "2",
        "--json",
    ]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["qid"], "0");
    assert_eq!(first["results"].as_array().unwrap().len(), 2);
    let info: serde_json::Value =
        serde_json::from_str(&cli_ok(&["info", "--index", &idx, "--json"])).unwrap();
    assert_eq!(info["n_docs"], 40);
    assert_eq!(info["dim"], DIM);
    assert_eq!(info["nbits"], 16);
    assert!(cli_ok(&["verify", "--index", &idx]).starts_with("ok"));
}

#[test]
fn external_ids_are_used_in_results() {
    let f = Fixture::new();
    let ids: String = (0..40).map(|i| format!("doc-{i}\n")).collect();
    fs::write(f.dir.path().join("ids.txt"), ids).unwrap();
    let idx = f.p("idx");
    cli_ok(&["build", "--embeddings", &f.p("docs.safetensors"), "--index", &idx, "--ids", &f.p("ids.txt")]);
    let run = cli_ok(&["search", "--index", &idx, "--query-embeddings", &f.p("q.safetensors")]);
    assert!(run.lines().all(|l| l.split(' ').nth(2).unwrap().starts_with("doc-")), "{run}");
}

#[test]
fn bad_ids_files_are_rejected() {
    let f = Fixture::new();
    let idx = f.p("idx");
    let docs = f.p("docs.safetensors");
    fs::write(f.dir.path().join("short.txt"), "a\nb\n").unwrap();
    cli_err(
        &["build", "--embeddings", &docs, "--index", &idx, "--ids", &f.p("short.txt")],
        &["short.txt", "2 ids for 40"],
    );
    let dup: String = (0..40).map(|i| format!("d{}\n", i.min(38))).collect();
    fs::write(f.dir.path().join("dup.txt"), dup).unwrap();
    cli_err(
        &["build", "--embeddings", &docs, "--index", &idx, "--ids", &f.p("dup.txt")],
        &["dup.txt", "line 40", "duplicate"],
    );
    assert!(!f.dir.path().join("idx").exists());
}

#[test]
fn bad_embedding_files_are_rejected_naming_the_file() {
    let f = Fixture::new();
    let idx = f.p("idx");
    let path = |n: &str| f.p(n);
    cli_err(
        &["build", "--embeddings", &path("missing.safetensors"), "--index", &idx],
        &["missing.safetensors"],
    );
    fs::write(f.dir.path().join("garbage.safetensors"), b"not a safetensors file at all").unwrap();
    cli_err(
        &["build", "--embeddings", &path("garbage.safetensors"), "--index", &idx],
        &["garbage.safetensors", "safetensors"],
    );

    let lens = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let emb = vec![0u8; 6 * DIM * 4];
    write_tensors(
        &f.dir.path().join("names.safetensors"),
        vec![
            ("embs", Dtype::F32, vec![6, DIM], emb.clone()),
            ("doclens", Dtype::I64, vec![2], lens(&[3, 3])),
        ],
    );
    cli_err(
        &["build", "--embeddings", &path("names.safetensors"), "--index", &idx],
        &["names.safetensors", "`embeddings`"],
    );
    write_tensors(
        &f.dir.path().join("sum.safetensors"),
        vec![
            ("embeddings", Dtype::F32, vec![6, DIM], emb.clone()),
            ("doclens", Dtype::I64, vec![2], lens(&[3, 4])),
        ],
    );
    cli_err(
        &["build", "--embeddings", &path("sum.safetensors"), "--index", &idx],
        &["sum.safetensors", "sum to 7"],
    );
    write_tensors(
        &f.dir.path().join("zero.safetensors"),
        vec![
            ("embeddings", Dtype::F32, vec![6, DIM], emb.clone()),
            ("doclens", Dtype::I64, vec![3], lens(&[3, 0, 3])),
        ],
    );
    cli_err(
        &["build", "--embeddings", &path("zero.safetensors"), "--index", &idx],
        &["zero.safetensors", "document 1 has 0 tokens"],
    );
    write_tensors(
        &f.dir.path().join("dtype.safetensors"),
        vec![
            ("embeddings", Dtype::I32, vec![6, DIM], emb.clone()),
            ("doclens", Dtype::I64, vec![2], lens(&[3, 3])),
        ],
    );
    cli_err(
        &["build", "--embeddings", &path("dtype.safetensors"), "--index", &idx],
        &["dtype.safetensors", "I32"],
    );
    let mut nan = vec![0u8; 6 * DIM * 4];
    nan[4 * 17..4 * 18].copy_from_slice(&f32::NAN.to_le_bytes());
    write_tensors(
        &f.dir.path().join("nan.safetensors"),
        vec![("embeddings", Dtype::F32, vec![6, DIM], nan), ("doclens", Dtype::I64, vec![2], lens(&[3, 3]))],
    );
    cli_err(
        &["build", "--embeddings", &path("nan.safetensors"), "--index", &idx],
        &["nan.safetensors", "non-finite"],
    );
    write_tensors(
        &f.dir.path().join("dim.safetensors"),
        vec![
            ("embeddings", Dtype::F32, vec![2, 12], vec![0u8; 2 * 12 * 4]),
            ("doclens", Dtype::I64, vec![1], lens(&[2])),
        ],
    );
    cli_err(&["build", "--embeddings", &path("dim.safetensors"), "--index", &idx], &["multiple of 8"]);
    cli_err(
        &["build", "--embeddings", &path("docs.safetensors"), "--index", &idx, "--train-memory", "0"],
        &["--train-memory 0", "at least 1"],
    );
    cli_err(
        &[
            "build",
            "--embeddings",
            &path("docs.safetensors"),
            "--index",
            &idx,
            "--train-memory",
            "17592186044416",
        ],
        &["--train-memory", "too large"],
    );
    assert!(!f.dir.path().join("idx").exists(), "a failed build must leave nothing behind");
    let leftovers: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".idx"))
        .collect();
    assert!(leftovers.is_empty(), "temporary directories left behind: {leftovers:?}");
}

#[test]
fn existing_index_is_kept_unless_overwrite() {
    let f = Fixture::new();
    let idx = f.build();
    cli_err(&["build", "--embeddings", &f.p("docs.safetensors"), "--index", &idx], &["already exists"]);
    cli_ok(&["build", "--embeddings", &f.p("docs.safetensors"), "--index", &idx, "--overwrite"]);
    cli_ok(&["verify", "--index", &idx]);
}

#[test]
fn bad_queries_are_rejected() {
    let f = Fixture::new();
    let idx = f.build();
    let q8 = unit_vectors(&mut Rng::new(3), 4 * 8, 8);
    write_queries(&f.dir.path().join("q8.safetensors"), &q8, 4, 8);
    cli_err(
        &["search", "--index", &idx, "--query-embeddings", &f.p("q8.safetensors")],
        &["q8.safetensors", "dimension 8", "16"],
    );
    write_tensors(
        &f.dir.path().join("qempty.safetensors"),
        vec![("queries", Dtype::F32, vec![1, 0, DIM], vec![])],
    );
    cli_err(
        &["search", "--index", &idx, "--query-embeddings", &f.p("qempty.safetensors")],
        &["qempty.safetensors", "empty"],
    );
    cli_err(&["search", "--index", &f.p("nope"), "--query-embeddings", &f.p("q.safetensors")], &["nope"]);
}

#[test]
fn damaged_indexes_are_detected() {
    let f = Fixture::new();
    let idx = f.build();
    let idx_path = f.dir.path().join("idx");
    let copy = |name: &str| {
        let dst = f.dir.path().join(name);
        fs::create_dir(&dst).unwrap();
        for e in fs::read_dir(&idx_path).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        dst
    };
    // A bit flip in the payload: open succeeds, verify names the file.
    let flipped = copy("flipped");
    let emb = flipped.join("embeddings.f16");
    let mut bytes = fs::read(&emb).unwrap();
    bytes[100] ^= 0x04;
    fs::write(&emb, bytes).unwrap();
    cli_err(&["verify", "--index", s(&flipped)], &["embeddings.f16", "checksum mismatch"]);
    // Truncation: open fails, naming the file.
    let truncated = copy("truncated");
    let offsets = truncated.join("doc_offsets.u64");
    let bytes = fs::read(&offsets).unwrap();
    fs::write(&offsets, &bytes[..bytes.len() - 9]).unwrap();
    cli_err(&["info", "--index", s(&truncated)], &["doc_offsets.u64"]);
    // A missing file.
    let missing = copy("missing");
    fs::remove_file(missing.join("doc_ids.utf8")).unwrap();
    cli_err(
        &["search", "--index", s(&missing), "--query-embeddings", &f.p("q.safetensors")],
        &["doc_ids.utf8", "missing"],
    );
    // A newer format version in a footer.
    let newer = copy("newer");
    let offsets = newer.join("doc_offsets.u64");
    let mut bytes = fs::read(&offsets).unwrap();
    let n = bytes.len();
    bytes[n - 32 + 8..n - 32 + 12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(&offsets, bytes).unwrap();
    cli_err(&["verify", "--index", s(&newer)], &["doc_offsets.u64", "version 99", "newer"]);
    // Every single-byte truncation of every file is caught by open or verify.
    for name in ["meta.json", "doc_offsets.u64", "embeddings.f16", "doc_id_offsets.u64", "doc_ids.utf8"] {
        let t = copy(&format!("t-{name}"));
        let p = t.join(name);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        cli_err(&["verify", "--index", s(&t)], &[name]);
    }
    let _ = idx;
}

#[test]
fn help_explains_every_flag() {
    for cmd in ["build", "search", "info", "verify", "serve"] {
        let out = cli_ok(&[cmd, "--help"]);
        assert!(out.contains("--index"), "{cmd} --help: {out}");
    }
    let build = cli_ok(&["build", "--help"]);
    for flag in [
        "--embeddings",
        "--ids",
        "--nbits",
        "--overwrite",
        "--store-f16",
        "--centroids",
        "--sample-docs",
        "--seed",
    ] {
        assert!(build.contains(flag), "{build}");
    }
}

#[test]
fn eval_compares_two_runs_query_by_query() {
    let data = repo_path("tests/data/eval");
    let (qrels, bm25, random) =
        (data.join("cranfield.qrels"), data.join("cranfield_bm25.run"), data.join("cranfield_random.run"));
    let json = cli_ok(&[
        "eval",
        "--run",
        s(&bm25),
        "--baseline",
        s(&random),
        "--qrels",
        s(&qrels),
        "--metrics",
        "nDCG@10,MAP",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = &v["comparison"];
    let queries = c["queries"].as_u64().unwrap();
    assert_eq!(queries, v["queries"].as_u64().unwrap());
    for metric in ["nDCG@10", "MAP"] {
        let m = &c["metrics"][metric];
        let (base, run, delta) =
            (m["baseline"].as_f64().unwrap(), m["run"].as_f64().unwrap(), m["delta"].as_f64().unwrap());
        assert!((run - v["mean"][metric].as_f64().unwrap()).abs() < 1e-12, "{metric}");
        assert!((delta - (run - base)).abs() < 1e-12, "{metric}");
        let (lo, hi) = (m["ci95"][0].as_f64().unwrap(), m["ci95"][1].as_f64().unwrap());
        assert!(lo < delta && delta < hi, "{metric}: {delta} outside [{lo}, {hi}]");
        // BM25 against a random ranking: far beyond chance.
        assert!(lo > 0.0 && m["p_value"].as_f64().unwrap() < 0.001, "{metric}: {m}");
        let counts: u64 = ["better", "worse", "tied"].iter().map(|k| m[k].as_u64().unwrap()).sum();
        assert_eq!(counts, queries);
    }
    // The same run against itself: no difference, no evidence.
    let table = cli_ok(&["eval", "--run", s(&bm25), "--baseline", s(&bm25), "--qrels", s(&qrels)]);
    assert!(table.contains("95% CI of delta"), "{table}");
    let ndcg = table.lines().rev().find(|l| l.starts_with("nDCG@10")).unwrap();
    assert!(ndcg.contains("[+0.0000, +0.0000]") && ndcg.contains("1.0000"), "{ndcg}");
    let out = cli(&["eval", "--run", s(&bm25), "--qrels", s(&qrels), "--resamples", "10"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--baseline"));
    cli_err(
        &["eval", "--run", s(&bm25), "--baseline", s(&data.join("missing.run")), "--qrels", s(&qrels)],
        &["baseline", "missing.run"],
    );
}
