//! Hardening: every bad input ends in a clear one-line error naming the file (or a correct
//! result), never a panic, an abort or a hang. Each test names the case it covers (D1, D2, ...);
//! docs/RELIABILITY.md lists them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::embeddings::QueryEmbeddings;
use engine::{BuildOptions, CompressedBuilder, CompressedParams, IndexBuilder, SearchParams, Segment};
use index_format::footer::{FooterWriter, FOOTER_LEN};
use index_format::Component;
use safetensors::Dtype;
use tempfile::TempDir;

use crate::common::*;

/// A copy of the committed golden index of format `version` (v1: uncompressed, 25 documents of
/// dim 16; v4: compressed, 40 documents, 24 centroids) in `dir`.
fn golden(dir: &Path, version: u32) -> PathBuf {
    let from = repo_path(&format!("tests/data/golden_v{version}/index"));
    let to = dir.join(format!("v{version}"));
    fs::create_dir_all(&to).unwrap();
    for e in fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

fn golden_queries(version: u32) -> PathBuf {
    repo_path(&format!("tests/data/golden_v{version}/queries.safetensors"))
}

/// Rewrites an index file with a new payload and a valid footer, so that only the checks of
/// what the payload says can catch it.
fn rewrite(path: &Path, component: Component, payload: &[u8]) {
    let mut w = FooterWriter::new(Vec::new(), component.id());
    w.write_all(payload).unwrap();
    fs::write(path, w.finish().unwrap().0).unwrap();
}

fn payload(path: &Path) -> Vec<u8> {
    let b = fs::read(path).unwrap();
    b[..b.len() - FOOTER_LEN].to_vec()
}

/// Edits `meta.json` of the index in `dir` (its footer rewritten to match).
fn edit_meta(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("meta.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&payload(&path)).unwrap();
    edit(&mut meta);
    rewrite(&path, Component::Meta, serde_json::to_string_pretty(&meta).unwrap().as_bytes());
}

/// Edits `doc_offsets.u64` of the index in `dir` (its footer rewritten to match).
fn edit_offsets(dir: &Path, edit: impl FnOnce(&mut Vec<u64>)) {
    let path = dir.join("doc_offsets.u64");
    let mut v: Vec<u64> =
        payload(&path).chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).collect();
    edit(&mut v);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    rewrite(&path, Component::DocOffsets, &bytes);
}

/// Runs the CLI, failing the test (and killing the process) if it has not ended within
/// `limit`: for inputs that used to hang. Returns (success, stderr).
fn cli_within(args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_colbert-index"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.success(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("colbert-index {args:?} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// D15: the footer's reserved bytes are documented as zero; a file whose reserved bytes are not
/// is refused at open, naming it.
#[test]
fn footer_reserved_bytes_are_checked_at_open() {
    let dir = TempDir::new().unwrap();
    let idx = golden(dir.path(), 1);
    let path = idx.join("doc_offsets.u64");
    let mut bytes = fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() = 1;
    fs::write(&path, bytes).unwrap();
    let err = Segment::open(&idx).unwrap_err().to_string();
    assert!(err.contains("doc_offsets.u64") && err.contains("reserved"), "{err}");
    cli_err(&["info", "--index", s(&idx)], &["doc_offsets.u64", "reserved"]);
}

/// D11: a FIFO in place of an index file used to block `info`, `verify` and `search` forever
/// (opening a FIFO waits for a writer). Now it is refused as not a regular file.
#[test]
fn a_fifo_in_place_of_an_index_file_is_refused_not_waited_on() {
    let dir = TempDir::new().unwrap();
    let q = golden_queries(1);
    for name in ["meta.json", "embeddings.f16", "doc_ids.utf8"] {
        let idx = golden(dir.path(), 1);
        let path = idx.join(name);
        fs::remove_file(&path).unwrap();
        let made = Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("!!! SKIPPED: mkfifo is not available");
            return;
        }
        for args in [
            vec!["info", "--index", s(&idx)],
            vec!["verify", "--index", s(&idx)],
            vec!["search", "--index", s(&idx), "--query-embeddings", s(&q)],
        ] {
            let (ok, err) = cli_within(&args, Duration::from_secs(30));
            assert!(!ok, "{args:?} should fail");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(name) && err.contains("not a regular file"), "{args:?}: {err}");
        }
        fs::remove_dir_all(&idx).unwrap();
    }
    // A directory in place of a file, the same.
    let idx = golden(dir.path(), 1);
    fs::remove_file(idx.join("doc_ids.utf8")).unwrap();
    fs::create_dir(idx.join("doc_ids.utf8")).unwrap();
    cli_err(&["info", "--index", s(&idx)], &["doc_ids.utf8", "not a regular file"]);
}

/// D6: `n_docs = 2^64 − 1` in `meta.json` with empty offset files made `n_docs + 1` wrap to 0,
/// so the offsets' length check passed and reading their first entry panicked.
#[test]
fn a_document_count_that_overflows_is_an_error() {
    let dir = TempDir::new().unwrap();
    let idx = golden(dir.path(), 1);
    edit_meta(&idx, |m| m["n_docs"] = u64::MAX.into());
    rewrite(&idx.join("doc_offsets.u64"), Component::DocOffsets, &[]);
    rewrite(&idx.join("doc_id_offsets.u64"), Component::DocIdOffsets, &[]);
    let q = golden_queries(1);
    for args in [
        vec!["info", "--index", s(&idx)],
        vec!["verify", "--index", s(&idx)],
        vec!["search", "--index", s(&idx), "--query-embeddings", s(&q)],
    ] {
        cli_err(&args, &["meta.json", "18446744073709551615 documents"]);
    }
}

/// D7: `dim = 2^63 + 16` made `n_tokens × dim` wrap to the real embedding count (146 tokens:
/// an even count), so `verify` accepted the index.
#[test]
fn a_dimension_whose_sizes_overflow_is_an_error() {
    let dir = TempDir::new().unwrap();
    let idx = golden(dir.path(), 1);
    edit_meta(&idx, |m| m["dim"] = ((1u64 << 63) + 16).into());
    let err = Segment::open(&idx).unwrap_err().to_string();
    assert!(err.contains("meta.json") && err.contains("overflows"), "{err}");
    cli_err(&["verify", "--index", s(&idx)], &["meta.json", "n_tokens × dim overflows"]);
    // The residual kind: its centroid, bucket and residual sizes are checked the same way.
    let idx = golden(dir.path(), 4);
    edit_meta(&idx, |m| m["dim"] = ((1u64 << 63) + 16).into());
    cli_err(&["verify", "--index", s(&idx)], &["meta.json", "overflows"]);
}

/// D2: `doc_offsets.u64` is checked only at its ends when an index is opened; offsets in
/// between that decrease or pass the token count used to panic the uncompressed search and
/// the PLAID search, and make the compressed exhaustive search allocate gigabytes.
#[test]
fn corrupt_document_offsets_are_errors_not_panics() {
    let dir = TempDir::new().unwrap();
    let queries = QueryEmbeddings::open(&golden_queries(1)).unwrap().queries;
    type Edit = fn(&mut Vec<u64>);
    let cases: [(&str, Edit); 2] =
        [("past the end", |o| o[5] = 1 << 24), ("decreasing", |o| o[3] = o[4] + 1)];
    for (what, edit) in cases {
        // Uncompressed.
        let idx = golden(dir.path(), 1);
        edit_offsets(&idx, edit);
        let index = Segment::open(&idx).unwrap();
        for result in [
            index.search(&queries, &SearchParams::for_k(10)),
            index.search_exhaustive(&queries, 10),
            index.search_one(&queries[0], &SearchParams::for_k(10), None).map(|h| vec![h]),
        ] {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("doc_offsets.u64") && err.contains("document"), "{what}: {err}");
        }
        assert!(index.reader().doc_embeddings(4).is_err() || index.reader().doc_embeddings(3).is_err());
        assert!(index.verify().is_err());
        cli_err(
            &["search", "--index", s(&idx), "--query-embeddings", s(&golden_queries(1))],
            &["doc_offsets.u64"],
        );
        fs::remove_dir_all(&idx).unwrap();

        // Compressed: PLAID probing every centroid (so every document is a candidate), and the
        // exhaustive search over decompressed vectors.
        let idx = golden(dir.path(), 4);
        edit_offsets(&idx, edit);
        let index = Segment::open(&idx).unwrap();
        let q4 = QueryEmbeddings::open(&golden_queries(4)).unwrap().queries;
        let plaid = SearchParams {
            ncells: 1000,
            ndocs: 1000,
            centroid_score_threshold: -1e9,
            bf16_centroid_scores: false,
            ..SearchParams::for_k(10)
        };
        let exhaustive = SearchParams { exhaustive: true, ..SearchParams::for_k(10) };
        // (A range that is in bounds but wrong, as document 2's when offset 3 moves past
        // offset 4, is caught by its codes, which then do not decode to its length.)
        let named = |err: &str| err.contains("doc_offsets.u64") || err.contains("codes.rice");
        for params in [plaid, exhaustive] {
            let err = index.search(&q4, &params).unwrap_err().to_string();
            assert!(named(&err) && err.contains("corrupt index: document"), "{what}: {err}");
        }
        assert!(index.verify().is_err());
        let err = cli_err(
            &["search", "--index", s(&idx), "--query-embeddings", s(&golden_queries(4)), "--exhaustive"],
            &["corrupt index: document"],
        );
        assert!(named(&err), "{err}");
        fs::remove_dir_all(&idx).unwrap();
    }
}

/// D14: doclens `[2^63 − 1, 2^63 − 1, 10]` sum to 8 modulo 2^64; with 8 embedding rows the
/// wrapped sum matched and `build` panicked later.
#[test]
fn doclens_whose_sum_overflows_are_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("wrap.safetensors");
    let emb = unit_vectors(&mut Rng::new(3), 8, 16);
    write_embeddings(&path, &emb, 16, &[i64::MAX, i64::MAX, 10], Dtype::F32);
    for nbits in ["16", "2"] {
        let idx = dir.path().join(format!("idx{nbits}"));
        cli_err(
            &["build", "--embeddings", s(&path), "--index", s(&idx), "--nbits", nbits],
            &["wrap.safetensors", "doclens sum past 2^64"],
        );
    }
}

/// D8 and D9: NaN (from a broken model) or an f32 value beyond f16's range (which f16 turns
/// into an infinity) used to be stored; `verify` accepted the index. Both builders refuse them,
/// naming the document.
#[test]
fn values_that_are_not_finite_in_f16_are_refused_naming_the_document() {
    let dir = TempDir::new().unwrap();
    let dim = 16;
    // The uncompressed builder stored NaN without a check.
    let mut b = IndexBuilder::create(&dir.path().join("nan"), dim, BuildOptions::default()).unwrap();
    b.add("fine", &vec![0.25; dim]).unwrap();
    let mut bad = vec![0.25; 2 * dim];
    bad[dim + 3] = f32::NAN;
    let err = b.add("broken", &bad).unwrap_err().to_string();
    assert!(err.contains("document `broken`") && err.contains("row 1, column 3"), "{err}");
    bad[dim + 3] = 70_000.0;
    let err = b.add("big", &bad).unwrap_err().to_string();
    assert!(err.contains("document `big`") && err.contains("f16"), "{err}");
    // 65519 still rounds to f16's largest value: accepted.
    bad[dim + 3] = 65_519.0;
    b.add("largest", &bad).unwrap();
    b.finish().unwrap();

    // The compressed builder: its training sample and its documents.
    let params = CompressedParams { n_centroids: Some(4), ..CompressedParams::new(2) };
    let mut c =
        CompressedBuilder::create(&dir.path().join("c"), dim, params, BuildOptions::default()).unwrap();
    let mut sample = unit_vectors(&mut Rng::new(5), 64, dim);
    sample[7] = -1e6;
    let err = c.train(&sample, 64).unwrap_err().to_string();
    assert!(err.contains("training sample") && err.contains("f16"), "{err}");
    sample[7] = 0.0;
    c.train(&sample, 64).unwrap();
    let err = c.add("huge", &[vec![0.1; dim], vec![1e5; dim]].concat()).unwrap_err().to_string();
    assert!(err.contains("document `huge`") && err.contains("row 1, column 0"), "{err}");

    // From the CLI, for both kinds: the error names the input file and the document's id.
    let (mut emb, lens) = random_docs(11, 40, 12, dim);
    emb[lens[0] as usize * dim + 5] = 1e5; // document 1, first token
    let input = dir.path().join("big.safetensors");
    write_embeddings(&input, &emb, dim, &lens, Dtype::F32);
    let ids = dir.path().join("ids.txt");
    fs::write(&ids, (0..40).map(|i| format!("doc-{i}\n")).collect::<String>()).unwrap();
    for nbits in ["16", "2"] {
        let idx = dir.path().join(format!("cli{nbits}"));
        let args =
            ["build", "--embeddings", s(&input), "--ids", s(&ids), "--index", s(&idx), "--nbits", nbits];
        let err = cli_err(&args, &["big.safetensors", "document `doc-1`", "f16"]);
        assert!(!idx.exists(), "{err}");
    }
}

/// D12: ids with Unicode whitespace made the TREC run unreadable by the tool's own `eval`;
/// control characters reached the terminal raw. Refused at build, in query files, and in
/// `--tag`.
#[test]
fn ids_with_whitespace_or_control_characters_are_refused() {
    let dir = TempDir::new().unwrap();
    let dim = 16;
    let (emb, lens) = random_docs(13, 5, 4, dim);
    let input = dir.path().join("docs.safetensors");
    write_embeddings(&input, &emb, dim, &lens, Dtype::F32);
    let bad_ids = [
        ("space", "a b", "U+0020"),
        ("vertical tab", "a\u{b}b", "U+000B"),
        ("no-break space", "a\u{a0}b", "U+00A0"),
        ("line separator", "a\u{2028}b", "U+2028"),
        ("escape", "a\u{1b}[31mb", "U+001B"),
        ("bell", "a\u{7}", "U+0007"),
    ];
    for (what, id, code) in bad_ids {
        let ids = dir.path().join("ids.txt");
        fs::write(&ids, format!("d0\nd1\n{id}\nd3\nd4\n")).unwrap();
        let idx = dir.path().join("idx");
        let err = cli_err(
            &["build", "--embeddings", s(&input), "--ids", s(&ids), "--index", s(&idx), "--nbits", "16"],
            &["ids.txt", "line 3", code],
        );
        assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{what}: raw control character: {err:?}");
        // The library refuses them too.
        let mut b = IndexBuilder::create(&dir.path().join("lib"), dim, BuildOptions::default()).unwrap();
        let e = b.add(id, &vec![0.5; dim]).unwrap_err().to_string();
        assert!(e.contains(code), "{what}: {e}");
        drop(b);
        // Query files: TSV and JSONL.
        let tsv = dir.path().join("q.tsv");
        fs::write(&tsv, format!("q1\tfirst\n{id}\tsecond\n")).unwrap();
        let e = engine::corpus::read_queries(&tsv).unwrap_err().to_string();
        assert!(e.contains("q.tsv") && e.contains("line 2") && e.contains(code), "{what}: {e}");
        let jsonl = dir.path().join("q.jsonl");
        fs::write(&jsonl, format!("{}\n", serde_json::json!({"_id": id, "text": "x"}))).unwrap();
        let e = engine::corpus::read_queries(&jsonl).unwrap_err().to_string();
        assert!(e.contains("q.jsonl") && e.contains("line 1") && e.contains(code), "{what}: {e}");
    }
    // From `search --queries` (read before any model is needed).
    let idx = golden(dir.path(), 1);
    let tsv = dir.path().join("bad.tsv");
    fs::write(&tsv, "my query\tboundary layer\n").unwrap();
    cli_err(&["search", "--index", s(&idx), "--queries", s(&tsv)], &["bad.tsv", "line 1", "U+0020"]);
    // A run tag with whitespace.
    let q = golden_queries(1);
    for tag in ["my run", "run\u{a0}1", ""] {
        cli_err(&["search", "--index", s(&idx), "--query-embeddings", s(&q), "--tag", tag], &["--tag"]);
    }
    let run = cli_ok(&["search", "--index", s(&idx), "--query-embeddings", s(&q), "--tag", "my-run"]);
    assert!(run.lines().all(|l| l.split_whitespace().count() == 6 && l.ends_with(" my-run")), "{run}");
}

/// D16: `-k 1099511627776` aborted (a heap of that capacity) and `--ndocs 2^64 − 1` panicked
/// (`ndocs + 1`); both now ask for no more than the corpus.
#[test]
fn absurd_search_depths_are_clamped_to_the_corpus() {
    let dir = TempDir::new().unwrap();
    for (version, n_docs) in [(1, 25), (4, 40)] {
        let idx = golden(dir.path(), version);
        let q = golden_queries(version);
        let n_queries = QueryEmbeddings::open(&q).unwrap().queries.len();
        let base = ["search", "--index", s(&idx), "--query-embeddings", s(&q)];
        let max = "18446744073709551615";
        for extra in [
            &["-k", "1099511627776"][..],
            &["-k", max],
            &["--ndocs", max],
            &["-k", max, "--ndocs", max, "--ncells", max],
            &["--exhaustive", "-k", max],
            &["--rescore", max],
        ] {
            let run = cli_ok(&[&base[..], extra].concat());
            let k = if extra.contains(&"-k") { n_docs } else { 10 };
            let lines = run.lines().count();
            // Exact searches return k for every query; PLAID at most k of its candidates.
            if version == 1 || extra.contains(&"--exhaustive") {
                assert_eq!(lines, n_queries * k, "v{version} {extra:?}");
            } else {
                assert!((n_queries..=n_queries * k).contains(&lines), "v{version} {extra:?}: {lines}");
            }
        }
    }
}

/// D17: finite query values of 3e38 gave infinite scores. Refused, with the value and where.
#[test]
fn query_values_that_would_overflow_scores_are_refused() {
    let dir = TempDir::new().unwrap();
    for version in [1, 4] {
        let idx = golden(dir.path(), version);
        let index = Segment::open(&idx).unwrap();
        let mut q = QueryEmbeddings::open(&golden_queries(version)).unwrap().queries;
        q[0][17] = 3e38;
        let err = index.search(&q, &SearchParams::for_k(5)).unwrap_err().to_string();
        assert!(err.contains("3e38") && err.contains("token 1, dimension 1"), "{err}");
        assert!(index.search_exhaustive(&q, 5).is_err());
        // Large but harmless values still search, with finite scores.
        q[0][17] = 1e15;
        let hits = index.search(&q, &SearchParams::for_k(5)).unwrap();
        assert!(hits.iter().flatten().all(|h| h.score.is_finite()));
    }
}

/// D18: `eval --resamples 2^64 − 1` panicked allocating the bootstrap.
#[test]
fn eval_resamples_are_bounded() {
    let qrels = repo_path("tests/data/eval/edge.qrels");
    let run = repo_path("tests/data/eval/edge.run");
    for n in ["18446744073709551615", "1000001", "0"] {
        cli_err(
            &["eval", "--qrels", s(&qrels), "--run", s(&run), "--baseline", s(&run), "--resamples", n],
            &["--resamples", n],
        );
    }
    cli_ok(&["eval", "--qrels", s(&qrels), "--run", s(&run), "--baseline", s(&run), "--resamples", "100"]);
}

/// D19: `synth` with absurd sizes panicked (overflowing products) or aborted (allocations).
#[test]
fn synth_refuses_absurd_sizes() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("s.safetensors");
    let queries = dir.path().join("q.safetensors");
    let max = "18446744073709551615";
    // (Each case gives every size it needs: the defaults would generate a real corpus.)
    for (flags, needle) in [
        (&["--docs", max, "--dim", "16", "--clusters", "4"][..], "overflow"),
        (&["--docs", "1000000000000", "--dim", "16", "--clusters", "4"], "--docs"),
        (&["--docs", "10", "--tokens-per-doc", max, "--dim", "16"], "tokens per document"),
        (
            &["--docs", "10", "--tokens-per-doc", "4", "--max-tokens-per-doc", max, "--dim", "16"],
            "tokens per document",
        ),
        (&["--docs", "10", "--dim", max], "dim"),
        (&["--docs", "10", "--dim", "16", "--clusters", max], "cluster centres"),
        (&["--docs", "10", "--dim", "1024", "--clusters", "1000000000000"], "cluster centres"),
    ] {
        cli_err(&[&["synth", "--out", s(&out)][..], flags].concat(), &[needle]);
        assert!(!out.exists());
    }
    for (n, len) in [(max, "4"), ("4", max), ("100000000000", "100000")] {
        let args = [
            "synth",
            "--out",
            s(&out),
            "--docs",
            "10",
            "--dim",
            "16",
            "--clusters",
            "4",
            "--queries-out",
            s(&queries),
            "--n-queries",
            n,
            "--query-len",
            len,
        ];
        cli_err(&args, &["--n-queries"]);
    }
}

/// D20: `bench --threads 100000` built a pool of that size. Capped at 4 × the cores.
#[test]
fn bench_thread_counts_are_capped() {
    let dir = TempDir::new().unwrap();
    let idx = golden(dir.path(), 1);
    let q = golden_queries(1);
    cli_err(
        &["bench", "--index", s(&idx), "--query-embeddings", s(&q), "--threads", "1,100000"],
        &["--threads 100000", "cores"],
    );
}

/// D1's flag: `--llm-timeout` is validated (1 s to a day) with a one-line error.
#[test]
fn llm_timeout_is_validated() {
    let dir = TempDir::new().unwrap();
    let idx = golden(dir.path(), 1);
    for t in ["0", "86401", "18446744073709551615"] {
        cli_err(
            &[
                "search",
                "--index",
                s(&idx),
                "--query",
                "x",
                "--llm",
                "openai:http://127.0.0.1:9",
                "--llm-timeout",
                t,
            ],
            &["--llm-timeout", t],
        );
    }
}

/// The files of a BM25 sub-index that tantivy wrote (its lock files and the checksum list
/// aside), sorted.
fn bm25_files(idx: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(idx.join("bm25"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            !name.ends_with(".lock") && name != "checksums.crc32"
        })
        .collect();
    files.sort();
    files
}

/// Runs `colbert-index ARGS`; fails the test if it panicked or died by a signal; returns
/// (success, stderr), checking that a failure is a one-line error.
fn cli_no_crash(args: &[&str]) -> (bool, String) {
    use std::os::unix::process::ExitStatusExt;
    let out = cli(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.code() != Some(101) && !err.contains("panicked") && out.status.signal().is_none(),
        "colbert-index {args:?} crashed ({}): {err}",
        out.status
    );
    if !out.status.success() {
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: error should be one line: {err}");
    }
    (out.status.success(), err)
}

/// D5: `verify` ignored the BM25 sub-index (`bm25/`, written by tantivy), and damaged BM25 files
/// made `search --bm25` and `--hybrid` panic inside tantivy (or abort, allocating a size read
/// from a damaged file). The build now records every file's length and CRC32
/// (`bm25/checksums.crc32`); `verify` and opening the BM25 index recompute them, naming the
/// damaged file; a panic of tantivy's on files that pass (a forged directory) is an error.
#[test]
fn a_damaged_bm25_index_is_an_error_naming_the_file() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let coll = dir.path().join("docs.tsv");
    fs::write(
        &coll,
        "d1\tThe boundary layer on a flat plate at supersonic speed.\n\
         d2\tHeat transfer to blunt bodies in hypersonic flow.\n\
         d3\tAeroelastic models of heated high speed aircraft.\n\
         d4\tLaminar flow over swept wings.\n\
         d5\tBoundary layer transition on swept wings and flat plates.\n",
    )
    .unwrap();
    let idx = dir.path().join("idx");
    let build =
        ["build", "--collection", s(&coll), "--model", s(&model), "--index", s(&idx), "--nbits", "16"];
    cli_ok(&[&build[..], &["--bm25"]].concat());
    let files = bm25_files(&idx);
    assert!(files.len() >= 5, "{files:?}");
    let ok = cli_ok(&["verify", "--index", s(&idx)]);
    assert!(ok.contains(&format!("bm25/: {} files", files.len())), "{ok}");
    let query = ["search", "--index", s(&idx), "--query", "flat plate boundary layer"];
    let bm25 = [&query[..], &["--bm25"]].concat();
    let hybrid = [&query[..], &["--hybrid"]].concat();
    cli_ok(&bm25);

    // Every file (the list and tantivy's meta files included), a byte flipped or cut short:
    // `verify` and both searches that read the BM25 index name it.
    let mut rng = Rng::new(5);
    let all: Vec<PathBuf> = [files.clone(), vec![idx.join("bm25/checksums.crc32")]].concat();
    for path in &all {
        let name = path.file_name().unwrap().to_str().unwrap();
        let original = fs::read(path).unwrap();
        let mut flipped = original.clone();
        flipped[rng.below(original.len() as u64) as usize] ^= 0x24;
        for damaged in [flipped, original[..original.len() / 2].to_vec()] {
            fs::write(path, &damaged).unwrap();
            cli_err(&["verify", "--index", s(&idx)], &[name]);
            cli_err(&bm25, &[name]);
            cli_err(&hybrid, &[name]);
        }
        fs::write(path, &original).unwrap();
    }
    cli_ok(&["verify", "--index", s(&idx)]);

    // A forged directory: damage, then a checksum list recomputed to match, so that tantivy
    // reads the damage. Seeded flips of every file; none may panic out of the engine, and some
    // of them do panic inside tantivy (the error says so), so the guard is exercised.
    let mut caught = 0;
    for path in &files {
        let original = fs::read(path).unwrap();
        for _ in 0..12 {
            let mut damaged = original.clone();
            for _ in 0..2 {
                damaged[rng.below(original.len() as u64) as usize] ^= 1 + rng.below(255) as u8;
            }
            fs::write(path, &damaged).unwrap();
            index_format::checksums::record(&idx.join("bm25"), |n| n.ends_with(".lock")).unwrap();
            let (ok, err) = cli_no_crash(&bm25);
            if !ok {
                assert!(err.contains("bm25"), "{err}");
                caught += usize::from(err.contains("the BM25 index failed while reading it"));
            }
        }
        fs::write(path, &original).unwrap();
    }
    assert!(caught > 0, "no damage made tantivy panic: the guard was not exercised");

    // An index built before checksum lists: `verify` checks tantivy's own segment checksums.
    index_format::checksums::record(&idx.join("bm25"), |n| n.ends_with(".lock")).unwrap();
    fs::remove_file(idx.join("bm25/checksums.crc32")).unwrap();
    let ok = cli_ok(&["verify", "--index", s(&idx)]);
    assert!(ok.contains("tantivy's own"), "{ok}");
    cli_ok(&bm25);
    let store = files.iter().find(|p| p.extension().is_some_and(|e| e == "store")).unwrap();
    let mut damaged = fs::read(store).unwrap();
    damaged[3] ^= 0x40;
    fs::write(store, &damaged).unwrap();
    let name = store.file_name().unwrap().to_str().unwrap();
    cli_err(&["verify", "--index", s(&idx)], &[name, "tantivy's checksum"]);
    cli_err(&bm25, &[name, "tantivy's checksum"]);
}
