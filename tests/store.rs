use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine::embeddings::QueryEmbeddings;
use engine::store::AddOptions;
use engine::{EngineError, Index, Query, SearchParams, Writer};
use tempfile::TempDir;

use crate::common::*;

const DIM: usize = 32;

/// A clustered synthetic collection of `docs` documents (ids `d0..`), `extra` more (ids `n0..`)
/// to add, and 4 queries.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(docs: usize) -> Self {
        let dir = TempDir::new().unwrap();
        let p = |n: &str| s(&dir.path().join(n)).to_owned();
        let synth = |out: &str, docs: usize, seed: &str, queries: Option<&str>| {
            let docs = docs.to_string();
            let mut args = vec![
                "synth",
                "--docs",
                &docs,
                "--tokens-per-doc",
                "8",
                "--max-tokens-per-doc",
                "24",
                "--dim",
                "32",
                "--clusters",
                "60",
                "--seed",
                seed,
                "--out",
                out,
            ];
            if let Some(q) = queries {
                args.extend(["--queries-out", q, "--n-queries", "4", "--query-len", "8"]);
            }
            cli_ok(&args);
        };
        synth(&p("docs.st"), docs, "42", Some(&p("q.st")));
        synth(&p("more.st"), 40, "43", None);
        let ids: String = (0..docs).map(|i| format!("d{i}\n")).collect();
        fs::write(dir.path().join("ids.txt"), ids).unwrap();
        let more: String = (0..40).map(|i| format!("n{i}\n")).collect();
        fs::write(dir.path().join("more_ids.txt"), more).unwrap();
        // Replacements of d0..d9 (the first ten documents of the second collection).
        let repl: String =
            (0..40).map(|i| if i < 10 { format!("d{i}\n") } else { format!("r{i}\n") }).collect();
        fs::write(dir.path().join("repl_ids.txt"), repl).unwrap();
        Fixture { dir }
    }

    fn p(&self, name: &str) -> String {
        s(&self.dir.path().join(name)).to_owned()
    }

    fn build(&self, name: &str, nbits: &str) -> PathBuf {
        self.build_with(name, &["--nbits", nbits])
    }

    /// Builds `docs.st` with `ids.txt` at `name` with the extra `build` flags.
    fn build_with(&self, name: &str, flags: &[&str]) -> PathBuf {
        let idx = self.dir.path().join(name);
        let (docs, ids) = (self.p("docs.st"), self.p("ids.txt"));
        let args = ["build", "--embeddings", &docs, "--ids", &ids, "--index", s(&idx)];
        cli_ok(&[&args[..], flags].concat());
        idx
    }

    fn queries(&self) -> Vec<Vec<f32>> {
        QueryEmbeddings::open(&self.dir.path().join("q.st")).unwrap().queries
    }

    /// Adds `more.st` with `ids` through the library.
    fn add(&self, idx: &Path, ids: &str, replace: bool) -> engine::Result<()> {
        let input = engine::embeddings::DocEmbeddingsFile::open(&self.dir.path().join("more.st")).unwrap();
        let ids: Vec<String> =
            fs::read_to_string(self.dir.path().join(ids)).unwrap().lines().map(String::from).collect();
        let mut w = Writer::open(idx, "test")?;
        let mut adding = w.begin_add(AddOptions { replace })?;
        let mut row = 0u64;
        let mut buf = Vec::new();
        for (d, &len) in input.doclens().iter().enumerate() {
            input.rows_f32(row..row + len, &mut buf).unwrap();
            adding.add(&ids[d], &buf)?;
            row += len;
        }
        adding.commit()?;
        Ok(())
    }
}

fn live(idx: &Path) -> BTreeSet<String> {
    Index::open(idx).unwrap().live_ids().into_iter().collect()
}

fn all_ids(index: &Index) -> Vec<String> {
    let mut ids = index.live_ids();
    ids.extend(["d-not-there".to_string(), "n0".to_string(), "d13".to_string()]);
    ids
}

/// An index built with `--warp-layout` (format v7's centroid-grouped copy, read in place by WARP
/// mode) answers WARP searches with the same bits as its twin without it (which builds the copy
/// in memory) through adds, deletes and compaction; added segments keep the layout, and
/// `compact` adds or drops it on request.
#[test]
fn the_stored_warp_layout_follows_adds_and_compaction() {
    use engine::store::CompactOptions;
    use engine::SearchMode;
    let f = Fixture::new(300);
    let twin = f.build("twin", "2");
    let idx = f.build_with("warp", &["--warp-layout"]);
    let warp = SearchParams {
        mode: SearchMode::Warp,
        min_centroid_fit: f32::NEG_INFINITY,
        ..SearchParams::for_k(10)
    };
    let raw = SearchParams { nprobe: Some(4), warp_rescore: Some(0), ..warp.clone() };
    let answers = |dir: &Path| {
        let index = Index::open(dir).unwrap();
        index.verify().unwrap();
        let mut out = Vec::new();
        for q in f.queries() {
            for p in [&warp, &raw] {
                let hits = index.search(Query::tokens(&q, DIM).unwrap(), 10, p).unwrap();
                out.push(hits.iter().map(|h| (h.id.clone(), h.score.to_bits())).collect::<Vec<_>>());
            }
        }
        out
    };
    let stored = |dir: &Path| dir.join("warp_docs.u32").is_file();
    assert!(stored(&idx) && !stored(&twin));
    assert_eq!(answers(&idx), answers(&twin));
    for dir in [&idx, &twin] {
        f.add(dir, "more_ids.txt", false).unwrap();
        Writer::open(dir, "test").unwrap().delete(&["d3", "n7"]).unwrap();
    }
    assert!(stored(&idx.join("seg-000001")) && !stored(&twin.join("seg-000001")));
    assert_eq!(answers(&idx), answers(&twin));
    // What `prepare_warp` maps: the layout files of both segments, less their footers.
    let layout_files = |dir: &Path| -> u64 {
        let names = ["warp_counts.u32", "warp_codes.u8", "warp_docs.u32", "warp_norms.f16"];
        let sizes = [dir.to_path_buf(), dir.join("seg-000001")]
            .into_iter()
            .flat_map(|d| names.map(|n| fs::metadata(d.join(n)).map_or(0, |m| m.len() - 32)));
        sizes.sum()
    };
    let opened = Index::open(&idx).unwrap();
    assert!(layout_files(&idx) > 0);
    assert_eq!(opened.stored_warp_bytes(), layout_files(&idx));
    opened.prepare_warp().unwrap();
    assert_eq!(Index::open(&twin).unwrap().stored_warp_bytes(), 0);
    // Compaction keeps it by default, drops it or adds it on request; the answers never move.
    let before = answers(&idx);
    Writer::open(&idx, "test").unwrap().compact().unwrap();
    assert!(stored(&idx));
    assert_eq!(answers(&idx), before);
    Writer::open(&idx, "test").unwrap().compact_with(CompactOptions { warp_layout: Some(false) }).unwrap();
    assert!(!stored(&idx));
    assert_eq!(answers(&idx), before);
    Writer::open(&twin, "test").unwrap().compact_with(CompactOptions { warp_layout: Some(true) }).unwrap();
    assert!(stored(&twin));
    assert_eq!(answers(&twin), before);
    let meta = Index::open(&twin).unwrap().meta().clone();
    assert!(meta.format_version >= 7 && meta.residual.is_some_and(|r| r.warp_layout));
    // An uncompressed index has no codes to group: an error, and the index is left as it was.
    let plain = f.build("plain", "16");
    let err = Writer::open(&plain, "test").unwrap().compact_with(CompactOptions { warp_layout: Some(true) });
    assert!(matches!(err, Err(EngineError::InvalidArgument(ref m)) if m.contains("uncompressed")), "{err:?}");
    Index::open(&plain).unwrap().verify().unwrap();
}

#[test]
fn adds_deletes_and_compaction_keep_ids_stable_and_scores_exact() {
    let f = Fixture::new(200);
    for nbits in ["2", "16"] {
        let idx = f.build(&format!("idx{nbits}"), nbits);
        let mut model: BTreeSet<String> = (0..200).map(|i| format!("d{i}")).collect();
        assert_eq!(live(&idx), model);
        f.add(&idx, "more_ids.txt", false).unwrap();
        model.extend((0..40).map(|i| format!("n{i}")));
        assert_eq!(live(&idx), model);
        // An id that exists is refused without replace, and nothing is added.
        let err = f.add(&idx, "more_ids.txt", false).unwrap_err();
        assert!(matches!(err, EngineError::DuplicateId { ref id } if id == "n0"), "{err}");
        assert_eq!(live(&idx), model);
        let mut w = Writer::open(&idx, "test").unwrap();
        let report = w.delete(&["d13", "n5", "d13", "nope"]).unwrap();
        assert_eq!(report.deleted, ["d13", "n5"]);
        assert_eq!(report.missing, ["nope"]);
        drop(w);
        model.remove("d13");
        model.remove("n5");
        assert_eq!(live(&idx), model);
        // Replacing d0..d9: same ids, new documents.
        f.add(&idx, "repl_ids.txt", true).unwrap();
        model.extend((10..40).map(|i| format!("r{i}")));
        assert_eq!(live(&idx), model);

        let index = Index::open(&idx).unwrap();
        index.verify().unwrap();
        assert_eq!(index.n_docs() as usize, model.len());
        // WARP mode's in-memory layout, built ahead of the first WARP search (compressed only).
        assert_eq!(index.prepare_warp().unwrap() > 0, nbits == "2");
        let queries = f.queries();
        let mut before = Vec::new();
        for q in &queries {
            let query = Query::tokens(q, DIM).unwrap();
            let hits = index.search(query, 50, &SearchParams::for_k(50)).unwrap();
            assert!(hits.iter().all(|h| model.contains(&h.id)), "a deleted id was returned");
            let warp = SearchParams { mode: engine::SearchMode::Warp, ..SearchParams::for_k(50) };
            let warp_hits = index.search(query, 50, &warp).unwrap();
            assert!(warp_hits.iter().all(|h| model.contains(&h.id)), "WARP returned a deleted id");
            assert!(hits
                .windows(2)
                .all(|w| w[0].score > w[1].score || (w[0].score == w[1].score && w[0].id < w[1].id)));
            // Rerank: every live id once, the deleted and unknown ones reported.
            let r = index.rerank(query, &all_ids(&index), usize::MAX).unwrap();
            assert_eq!(r.missing, ["d-not-there", "d13"]);
            assert_eq!(r.hits.len(), model.len());
            assert_eq!(r.hits.iter().map(|h| h.id.clone()).collect::<BTreeSet<_>>(), model);
            // Search's top results are rerank's, with the same scores (exact MaxSim on both).
            let top =
                index.rerank(query, &hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(), 10).unwrap();
            assert_eq!(top.hits, hits[..10].to_vec());
            before.push(r.hits);
        }
        Writer::open(&idx, "test").unwrap().compact().unwrap();
        assert!(!idx.join("manifest.bin").exists());
        assert_eq!(live(&idx), model);
        let compacted = Index::open(&idx).unwrap();
        compacted.verify().unwrap();
        for (q, want) in queries.iter().zip(&before) {
            let query = Query::tokens(q, DIM).unwrap();
            let r = compacted.rerank(query, &all_ids(&compacted), usize::MAX).unwrap();
            assert_eq!(&r.hits, want, "compaction changed scores (nbits {nbits})");
        }
        // The added segments' tokens fit the centroids about as well as the base's.
        let info = cli_ok(&["info", "--index", s(&idx), "--json"]);
        assert!(info.contains("\"live_docs\""), "{info}");
    }
}

#[test]
fn reranking_scores_exactly_the_given_documents() {
    let f = Fixture::new(150);
    let idx = f.build("idx", "16");
    let index = Index::open(&idx).unwrap();
    for q in f.queries() {
        let query = Query::tokens(&q, DIM).unwrap();
        let exhaustive = index.search(query, 150, &SearchParams::for_k(150)).unwrap();
        let ids: Vec<String> = exhaustive.iter().rev().map(|h| h.id.clone()).collect();
        let r = index.rerank(query, &ids, 10).unwrap();
        assert_eq!(r.hits, exhaustive[..10].to_vec());
        assert!(r.missing.is_empty());
        // A subset: exactly those, in score order.
        let some: Vec<&str> = vec!["d7", "d70", "d140", "d7"];
        let r = index.rerank(query, &some, 10).unwrap();
        let mut want: Vec<_> =
            exhaustive.iter().filter(|h| ["d7", "d70", "d140"].contains(&h.id.as_str())).cloned().collect();
        want.truncate(10);
        assert_eq!(r.hits, want);
    }
    // Dimension mismatch is a typed error.
    let q = vec![0.5f32; 2 * 16];
    let err = index.rerank(Query::tokens(&q, 16).unwrap(), &["d1"], 5).unwrap_err();
    assert!(matches!(err, EngineError::DimMismatch { expected: 32, got: 16, .. }), "{err}");
    // Values so large that scores would overflow are refused by search and rerank alike.
    let huge = vec![3e38f32; 2 * DIM];
    let q = Query::tokens(&huge, DIM).unwrap();
    assert!(index
        .search(q, 5, &SearchParams::for_k(5))
        .unwrap_err()
        .to_string()
        .contains("scores stay finite"));
    assert!(index.rerank(q, &["d1"], 5).unwrap_err().to_string().contains("scores stay finite"));
    // Text needs a model the index does not have.
    let err = index.search(Query::Text("hello"), 5, &SearchParams::for_k(5)).unwrap_err();
    assert!(err.to_string().contains("precomputed embeddings"), "{err}");
}

/// A residual index that stores its token norms (format v6) scores compressed tokens through
/// per-query lookup tables instead of decoding them: another computation than the MaxSim of the
/// decoded tokens (not bit-identical), which agrees with it within the tables' rounding, in
/// search, exhaustive search and rerank alike.
#[test]
fn table_scores_agree_with_the_decoded_maxsim() {
    let f = Fixture::new(150);
    let idx = f.build("idx", "2");
    let segment = engine::Segment::open(&idx).unwrap();
    assert!(segment.reader().token_norms().is_some());
    let view = segment.compressed().unwrap();
    let index = Index::open(&idx).unwrap();
    let all = SearchParams { exhaustive: true, ..SearchParams::for_k(150) };
    let (mut differ, mut buf) = (0, Vec::new());
    for q in f.queries() {
        let query = Query::tokens(&q, DIM).unwrap();
        let exhaustive = index.search(query, 150, &all).unwrap();
        let ids: Vec<String> = exhaustive.iter().map(|h| h.id.clone()).collect();
        let reranked = index.rerank(query, &ids, 150).unwrap();
        assert_eq!(reranked.hits, exhaustive, "rerank and exhaustive search score alike");
        for h in &exhaustive {
            let doc = segment.reader().find_doc(&h.id).unwrap();
            view.decompress_into(doc, &mut buf).unwrap();
            let decoded: f32 = q
                .chunks_exact(DIM)
                .map(|qt| {
                    buf.chunks_exact(DIM)
                        .map(|t| qt.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .sum();
            // Eight query tokens, each off by well under 1e-3 (i16 tables: about 1e-4).
            assert!((h.score - decoded).abs() <= 8e-3, "{}: {} vs {decoded}", h.id, h.score);
            differ += usize::from(h.score.to_bits() != decoded.to_bits());
        }
    }
    assert!(differ > 0, "scores did not go through the tables");
}

#[test]
fn snapshots_are_consistent_and_reload_sees_updates() {
    let f = Fixture::new(120);
    let idx = f.build("idx", "2");
    let s0 = Index::open(&idx).unwrap();
    f.add(&idx, "more_ids.txt", false).unwrap();
    assert_eq!(s0.n_docs(), 120, "an open snapshot does not change");
    let s1 = s0.reload().unwrap();
    assert_eq!(s1.n_docs(), 160);
    assert_eq!(s1.reload().unwrap().manifest().generation, s1.manifest().generation);
    Writer::open(&idx, "test").unwrap().delete(&["n1"]).unwrap();
    Writer::open(&idx, "test").unwrap().compact().unwrap();
    // The old snapshot keeps answering from its mapped files after the directory was replaced.
    let q = f.queries();
    let query = Query::tokens(&q[0], DIM).unwrap();
    assert!(s1.rerank(query, &["n1", "d2"], 5).unwrap().hits.len() == 2);
    let s2 = s1.reload().unwrap();
    assert_eq!(s2.n_docs(), 159);
    assert_eq!(s2.rerank(query, &["n1", "d2"], 5).unwrap().missing, ["n1"]);
    // Many threads share one snapshot.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for q in &q {
                    let hits = s2.search(Query::tokens(q, DIM).unwrap(), 5, &SearchParams::for_k(5)).unwrap();
                    assert_eq!(hits.len(), 5);
                }
            });
        }
    });
}

#[test]
fn a_second_writer_is_told_the_index_is_busy() {
    let f = Fixture::new(60);
    let idx = f.build("idx", "2");
    let w = Writer::open(&idx, "add").unwrap();
    let err = Writer::open(&idx, "delete").unwrap_err();
    assert!(matches!(err, EngineError::Busy { .. }), "{err}");
    fs::write(f.dir.path().join("del.txt"), "d1\n").unwrap();
    cli_err(&["delete", "--index", s(&idx), "--ids", &f.p("del.txt")], &["index busy", "(add)"]);
    drop(w);
    cli_ok(&["delete", "--index", s(&idx), "--ids", &f.p("del.txt")]);
}

#[test]
fn rerank_cli_reads_trec_runs_and_reports_missing_ids() {
    let f = Fixture::new(80);
    let idx = f.build("idx", "2");
    let run = cli_ok(&["search", "--index", s(&idx), "--query-embeddings", &f.p("q.st"), "-k", "20"]);
    let mut cands = run.clone();
    cands.push_str("0 Q0 ghost 21 0.0 x\n");
    fs::write(f.dir.path().join("run.trec"), &cands).unwrap();
    let out = cli(&[
        "rerank",
        "--index",
        s(&idx),
        "--query-embeddings",
        &f.p("q.st"),
        "--candidates",
        &f.p("run.trec"),
        "-k",
        "5",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("query 0: 1 candidate ids are not in the index: ghost"), "{stderr}");
    let reranked = String::from_utf8(out.stdout).unwrap();
    // Reranking search's own top 20 by exact MaxSim gives search's top 5 (same scores).
    let top5 = |text: &str, q: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{q} ")))
            .take(5)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", f[2], f[4])
            })
            .collect()
    };
    for q in ["0", "1", "2", "3"] {
        assert_eq!(top5(&reranked, q), top5(&run, q));
    }
    let json = cli_ok(&[
        "rerank",
        "--index",
        s(&idx),
        "--query-embeddings",
        &f.p("q.st"),
        "--candidates",
        &f.p("run.trec"),
        "--json",
    ]);
    assert!(json.lines().next().unwrap().contains("\"missing\":[\"ghost\"]"), "{json}");
    fs::write(f.dir.path().join("bad.tsv"), "0 1 2\n").unwrap();
    cli_err(
        &["rerank", "--index", s(&idx), "--query-embeddings", &f.p("q.st"), "--candidates", &f.p("bad.tsv")],
        &["bad.tsv", "line 1"],
    );
}

#[test]
fn overwrite_replaces_only_indexes() {
    let f = Fixture::new(40);
    let docs = f.dir.path().join("mydocs");
    fs::create_dir(&docs).unwrap();
    fs::write(docs.join("thesis.tex"), "x").unwrap();
    let build = |dest: &Path| {
        vec![
            "build".to_string(),
            "--embeddings".into(),
            f.p("docs.st"),
            "--index".into(),
            s(dest).into(),
            "--overwrite".into(),
        ]
    };
    let args = build(&docs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli_err(&args, &["mydocs", "not a colbert-index index"]);
    assert!(docs.join("thesis.tex").exists());
    let file = f.dir.path().join("notes.txt");
    fs::write(&file, "x").unwrap();
    let args = build(&file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli_err(&args, &["notes.txt", "not a colbert-index index"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Runs the CLI with the crash point at `step`; whether it was killed.
fn run_crashing(args: &[String], step: u64) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_colbert-index"))
        .args(args)
        .env("COLBERT_TEST_CRASH_AT_STEP", step.to_string())
        .output()
        .unwrap();
    if out.status.success() {
        return false;
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{args:?} failed without being killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Kills the writer before each of its durable steps in turn (and once more at random times
/// with a real SIGKILL): every time, the index opens, verifies and holds exactly the ids of
/// before the operation or of after it; the next writer then succeeds.
#[test]
fn a_writer_killed_at_any_step_leaves_the_index_before_or_after() {
    let f = Fixture::new(60);
    let pristine = f.build("pristine", "2");
    // An updated index to start from: one added segment, one deletion.
    cli_ok(&["add", "--index", s(&pristine), "--embeddings", &f.p("more.st"), "--ids", &f.p("more_ids.txt")]);
    fs::write(f.dir.path().join("del.txt"), "d4\nn7\n").unwrap();
    cli_ok(&["delete", "--index", s(&pristine), "--ids", &f.p("del.txt")]);
    fs::write(f.dir.path().join("del2.txt"), "d5\nn8\n").unwrap();
    let ops: Vec<(&str, Vec<String>)> = vec![
        (
            "add --replace",
            vec![
                "add".into(),
                "--embeddings".into(),
                f.p("more.st"),
                "--ids".into(),
                f.p("repl_ids.txt"),
                "--replace".into(),
            ],
        ),
        ("delete", vec!["delete".into(), "--ids".into(), f.p("del2.txt")]),
        ("compact", vec!["compact".into()]),
        (
            "build --overwrite",
            vec![
                "build".into(),
                "--embeddings".into(),
                f.p("more.st"),
                "--ids".into(),
                f.p("more_ids.txt"),
                "--overwrite".into(),
            ],
        ),
    ];
    let before = live(&pristine);
    let mut runs = 0;
    for (name, op) in &ops {
        // The state after the operation, from an uninterrupted run.
        let done = f.dir.path().join(format!("done-{}", name.replace(' ', "_")));
        copy_dir(&pristine, &done);
        let mut args = op.clone();
        args.extend(["--index".into(), s(&done).into()]);
        assert!(!run_crashing(&args, 0));
        let after = live(&done);
        if *name == "compact" {
            assert_eq!(Index::open(&done).unwrap().manifest().segments.len(), 1);
        } else {
            assert_ne!(after, before, "{name} changes the live ids");
        }
        let mut step = 1;
        loop {
            let idx = f.dir.path().join(format!("crash-{runs}"));
            copy_dir(&pristine, &idx);
            let mut args = op.clone();
            args.extend(["--index".into(), s(&idx).into()]);
            let killed = run_crashing(&args, step);
            runs += 1;
            let index = Index::open(&idx).unwrap_or_else(|e| panic!("{name} killed at step {step}: {e}"));
            index.verify().unwrap_or_else(|e| panic!("{name} killed at step {step}: {e}"));
            let got: BTreeSet<String> = index.live_ids().into_iter().collect();
            assert!(got == before || got == after, "{name} killed at step {step}: neither before nor after");
            if !killed {
                assert_eq!(got, after);
                break;
            }
            // The next writer cleans up and works.
            cli_ok(&["delete", "--index", s(&idx), "--ids", &f.p("del2.txt")]);
            cli_ok(&["verify", "--index", s(&idx)]);
            fs::remove_dir_all(&idx).unwrap();
            step += 1;
            assert!(step < 500, "{name} never finished");
        }
        assert!(step > 3, "{name}: only {step} durable steps were exercised");
    }
    // Real SIGKILLs at random times.
    let mut rng = Rng::new(5);
    for i in 0..12 {
        let (name, op) = &ops[i % ops.len()];
        let idx = f.dir.path().join(format!("kill-{i}"));
        copy_dir(&pristine, &idx);
        let after = live(&f.dir.path().join(format!("done-{}", name.replace(' ', "_"))));
        let mut args = op.clone();
        args.extend(["--index".into(), s(&idx).into()]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_colbert-index"))
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(60)));
        let _ = child.kill();
        let _ = child.wait();
        let index = Index::open(&idx).unwrap_or_else(|e| panic!("{name} killed at random: {e}"));
        index.verify().unwrap();
        let got: BTreeSet<String> = index.live_ids().into_iter().collect();
        assert!(got == before || got == after, "{name} killed at random: neither before nor after");
    }
}
