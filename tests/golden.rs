//! Golden indexes: `tests/data/golden_v{N}/` holds an index written by format version N, the
//! embeddings and queries it was built from, and the run it answered. Later versions of the
//! library must keep opening it and answer the same. Regenerate (only when adding a new version)
//! with `cargo test --test integration -- --ignored create_golden_v{N}`.

use std::fs;
use std::path::{Path, PathBuf};

use engine::embeddings::QueryEmbeddings;
use engine::{SearchParams, Segment};
use index_format::{Codes, Component, Ivf};
use safetensors::Dtype;
use tempfile::TempDir;

use crate::common::*;

fn golden_dir(version: u32) -> PathBuf {
    repo_path(&format!("tests/data/golden_v{version}"))
}

/// The run of `queries` at k = 5: exhaustive search (over the decompressed vectors for a
/// compressed index, so that the answer does not depend on the PLAID defaults).
fn run_text(index: &Segment, queries: &QueryEmbeddings) -> String {
    let results = if index.is_compressed() {
        index.search_decompressed(&queries.queries, 5).unwrap()
    } else {
        index.search(&queries.queries, &SearchParams::for_k(5)).unwrap()
    };
    let mut out = String::new();
    for (q, hits) in results.iter().enumerate() {
        for (r, h) in hits.iter().enumerate() {
            out += &format!("{q} Q0 {} {} {:.6} golden\n", index.doc_id(h.doc), r + 1, h.score);
        }
    }
    out
}

/// What a golden fixture is made of: 16-d random documents and queries, and the build flags.
struct Fixture {
    version: u32,
    /// Seed, number of documents, most tokens per document.
    docs: (u64, usize, u64),
    /// Seed, number of queries, tokens per query.
    queries: (u64, usize, usize),
    /// Whether to pass external ids (`golden-NN`).
    ids: bool,
    build_flags: &'static [&'static str],
}

/// Writes a golden fixture: embeddings, queries, the index built by the CLI, its run.
fn create_golden(f: &Fixture) {
    let dir = golden_dir(f.version);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (seed, n_docs, max_len) = f.docs;
    let (emb, lens) = random_docs(seed, n_docs, max_len, 16);
    let emb_path = dir.join("embeddings.safetensors");
    write_embeddings(&emb_path, &emb, 16, &lens, Dtype::F16);
    let (qseed, nq, qlen) = f.queries;
    let q = unit_vectors(&mut Rng::new(qseed), nq * qlen, 16);
    write_queries(&dir.join("queries.safetensors"), &q, qlen, 16);
    let index = dir.join("index");
    let mut args = vec!["build", "--embeddings", s(&emb_path)];
    let ids_path = dir.join("ids.txt");
    if f.ids {
        let ids: String = (0..n_docs).map(|i| format!("golden-{i:02}\n")).collect();
        fs::write(&ids_path, ids).unwrap();
        args.extend(["--ids", s(&ids_path)]);
    }
    args.extend(["--index", s(&index)]);
    args.extend(f.build_flags);
    cli_ok(&args);
    let index = Segment::open(&index).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    fs::write(dir.join("expected.run"), run_text(&index, &queries)).unwrap();
}

/// Opens and verifies the golden index of `version`, checks that it answers its run, returns it.
fn check_golden(version: u32) -> Segment {
    let dir = golden_dir(version);
    let index = Segment::open(&dir.join("index")).expect("golden index opens");
    index.verify().expect("golden index verifies");
    assert_eq!(index.meta().format_version, version);
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    let got = run_text(&index, &queries);
    let expected = fs::read_to_string(dir.join("expected.run")).unwrap();
    compare_runs(&got, &expected);
    index
}

const V1: Fixture = Fixture {
    version: 1,
    docs: (2024, 25, 9),
    queries: (4048, 2, 4),
    ids: true,
    build_flags: &["--nbits", "16"],
};

const V2: Fixture = Fixture {
    version: 2,
    docs: (2025, 30, 9),
    queries: (4049, 3, 4),
    ids: false,
    build_flags: &["--nbits", "2", "--centroids", "16", "--seed", "7"],
};

/// 24 centroids: 5-bit codes, so that codes straddle bytes and words.
const V3: Fixture = Fixture {
    version: 3,
    docs: (2026, 40, 12),
    queries: (4050, 3, 5),
    ids: false,
    build_flags: &["--nbits", "2", "--centroids", "24", "--seed", "11"],
};

/// Documents of up to 40 tokens over 24 centroids: runs of repeated centroids, Rice parameters
/// from 3 down to 0 (see `runs::doc_rice_param`).
const V4: Fixture = Fixture {
    version: 4,
    docs: (2027, 40, 40),
    queries: (4051, 3, 5),
    ids: true,
    build_flags: &["--nbits", "2", "--centroids", "24", "--seed", "13"],
};

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v1() {
    create_golden(&V1);
}

#[test]
fn golden_v1_opens_verifies_and_answers_the_same() {
    let index = check_golden(1);
    assert_eq!(index.meta().n_docs, 25);
}

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v2() {
    create_golden(&V2);
}

#[test]
fn golden_v2_opens_verifies_and_answers_the_same() {
    let index = check_golden(2);
    assert_eq!(index.meta().kind, index_format::IndexKind::Residual { nbits: 2 });
    assert_eq!(index.meta().residual.unwrap().n_centroids, 16);
}

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v3() {
    create_golden(&V3);
}

#[test]
fn golden_v3_opens_verifies_and_answers_the_same() {
    let index = check_golden(3);
    assert_eq!(index.meta().kind, index_format::IndexKind::Residual { nbits: 2 });
    assert_eq!(index.meta().residual.unwrap().n_centroids, 24);
    assert!(matches!(index.reader().codes(), Some(Codes::Packed(p)) if p.bits() == 5));
    assert!(matches!(index.reader().ivf(), Some(Ivf::Rice(_))));
}

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v4() {
    create_golden(&V4);
}

#[test]
fn golden_v4_opens_verifies_and_answers_the_same() {
    let index = check_golden(4);
    assert_eq!(index.meta().kind, index_format::IndexKind::Residual { nbits: 2 });
    assert_eq!(index.meta().residual.unwrap().n_centroids, 24);
    assert!(matches!(index.reader().codes(), Some(Codes::Runs(_))));
    assert!(matches!(index.reader().ivf(), Some(Ivf::Rice(_))));
    assert!(index.meta().residual.unwrap().unit_norm);
}

/// Version 5: an updated index. The v4-like base (with its id table) plus one added segment and
/// two deleted documents, named by `manifest.bin`.
const V5: Fixture = Fixture {
    version: 5,
    docs: (2028, 40, 20),
    queries: (4052, 3, 5),
    ids: true,
    build_flags: &["--nbits", "2", "--centroids", "24", "--seed", "17"],
};

/// The v5 run: the exact top 5 of every live document (rerank of all of them), through the
/// embedded ranker.
fn run_text_v5(index: &engine::Index, queries: &QueryEmbeddings) -> String {
    let ids = index.live_ids();
    let mut out = String::new();
    for (q, tokens) in queries.queries.iter().enumerate() {
        let r = index.rerank(engine::Query::tokens(tokens, 16).unwrap(), &ids, 5).unwrap();
        for (rank, h) in r.hits.iter().enumerate() {
            out += &format!("{q} Q0 {} {} {:.6} golden\n", h.id, rank + 1, h.score);
        }
    }
    out
}

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v5() {
    create_golden(&V5);
    let dir = golden_dir(5);
    let (emb, lens) = random_docs(2029, 10, 20, 16);
    write_embeddings(&dir.join("added.safetensors"), &emb, 16, &lens, Dtype::F16);
    let ids: String = (0..10).map(|i| format!("added-{i:02}\n")).collect();
    fs::write(dir.join("added_ids.txt"), ids).unwrap();
    fs::write(dir.join("deleted_ids.txt"), "golden-03\nadded-02\n").unwrap();
    let index = dir.join("index");
    cli_ok(&[
        "add",
        "--index",
        s(&index),
        "--embeddings",
        s(&dir.join("added.safetensors")),
        "--ids",
        s(&dir.join("added_ids.txt")),
    ]);
    cli_ok(&["delete", "--index", s(&index), "--ids", s(&dir.join("deleted_ids.txt"))]);
    let _ = fs::remove_file(index.with_file_name(".index.lock"));
    let live = engine::Index::open(&index).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    fs::write(dir.join("expected.run"), run_text_v5(&live, &queries)).unwrap();
}

#[test]
fn golden_v5_opens_verifies_and_answers_the_same() {
    let dir = golden_dir(5);
    let index = engine::Index::open(dir.join("index")).expect("golden index opens");
    index.verify().expect("golden index verifies");
    assert_eq!(index.meta().format_version, 5);
    assert_eq!(index.manifest().segments.len(), 2);
    assert_eq!(index.n_docs(), 48);
    assert!(index.segments().all(|s| s.reader().doc_id_table().is_some()));
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    let expected = fs::read_to_string(dir.join("expected.run")).unwrap();
    compare_runs(&run_text_v5(&index, &queries), &expected);
    let r = index
        .rerank(engine::Query::tokens(&queries.queries[0], 16).unwrap(), &["golden-03", "added-05"], 5)
        .unwrap();
    assert_eq!(r.missing, ["golden-03"]);
}

/// Version 6: unit-norm tokens, so the index stores each token's inverse decoded norm
/// (`norms.f16`) and scores its compressed tokens through lookup tables.
const V6: Fixture = Fixture {
    version: 6,
    docs: (2030, 40, 24),
    queries: (4053, 3, 5),
    ids: true,
    build_flags: &["--nbits", "2", "--centroids", "24", "--seed", "19"],
};

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v6() {
    create_golden(&V6);
    let dir = golden_dir(6);
    let index = engine::Index::open(dir.join("index")).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    fs::write(dir.join("expected_rerank.run"), run_text_v5(&index, &queries)).unwrap();
}

#[test]
fn golden_v6_opens_verifies_and_answers_the_same() {
    let index = check_golden(6);
    let norms = index.reader().token_norms().expect("v6 stores token norms");
    assert_eq!(norms.len() as u64, index.meta().n_tokens);
    assert!(index.meta().residual.is_some_and(|r| r.unit_norm && r.token_norms));
    let dir = golden_dir(6);
    let live = engine::Index::open(dir.join("index")).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    let expected = fs::read_to_string(dir.join("expected_rerank.run")).unwrap();
    compare_runs(&run_text_v5(&live, &queries), &expected);
}

/// Indexes of versions 1 to 4 (no id table, no manifest) rerank by id through the embedded
/// ranker, as exactly as search scores them.
#[test]
fn older_versions_rerank_by_id() {
    for version in 1..=4 {
        let dir = golden_dir(version);
        let index = engine::Index::open(dir.join("index")).unwrap();
        assert!(index.segments().all(|s| s.reader().doc_id_table().is_none()));
        let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
        let expected = fs::read_to_string(dir.join("expected.run")).unwrap();
        compare_runs(&run_text_v5(&index, &queries), &expected);
    }
}

/// A file's payload (without its footer).
fn payload(path: &Path) -> Vec<u8> {
    let b = fs::read(path).unwrap();
    b[..b.len() - 32].to_vec()
}

/// The v2 golden index and a v4 index built now from the same embeddings with the same settings
/// hold the same centroids, codes, residuals and lists (stored differently: v4 orders each
/// document's tokens by centroid) and answer the same.
#[test]
fn v4_and_v2_of_the_same_embeddings_answer_the_same() {
    let v2 = golden_dir(2);
    let tmp = TempDir::new().unwrap();
    let v3 = tmp.path().join("v4");
    let emb = v2.join("embeddings.safetensors");
    // The v2 fixture predates the joint codec: build with the per-dimension one it used.
    cli_ok(
        &[&["build", "--embeddings", s(&emb), "--index", s(&v3), "--codec", "per-dim"][..], V2.build_flags]
            .concat(),
    );
    let (a, b) = (Segment::open(&v2.join("index")).unwrap(), Segment::open(&v3).unwrap());
    b.verify().unwrap();
    assert_eq!((a.meta().format_version, b.meta().format_version), (2, index_format::FORMAT_VERSION));
    for c in [Component::Centroids, Component::DocOffsets, Component::DocIdOffsets, Component::DocIdBytes] {
        let name = c.file_name();
        assert!(payload(&v2.join("index").join(name)) == payload(&v3.join(name)), "{name} differs");
    }
    let (ca, cb) = (a.reader().codes().unwrap(), b.reader().codes().unwrap());
    assert!(matches!(ca, Codes::U16(_)) && matches!(cb, Codes::Runs(_)));
    // Per document, the same (code, residual row) pairs, v4's ordered by code.
    let (codes_a, codes_b) = (all_codes(a.reader()), all_codes(b.reader()));
    let (ra, rb) = (a.reader().residuals().unwrap(), b.reader().residuals().unwrap());
    let row = ra.len() / codes_a.len();
    let offsets = a.reader().doc_offsets();
    for d in 0..offsets.len() - 1 {
        let tokens = offsets[d] as usize..offsets[d + 1] as usize;
        let pairs = |codes: &[u32], res: &[u8]| {
            let mut v: Vec<(u32, Vec<u8>)> =
                tokens.clone().map(|t| (codes[t], res[t * row..(t + 1) * row].to_vec())).collect();
            v.sort();
            v
        };
        assert_eq!(pairs(&codes_a, ra), pairs(&codes_b, rb), "document {d} differs");
        assert!(codes_b[tokens.clone()].windows(2).all(|w| w[0] <= w[1]), "document {d} not ordered");
    }
    let (ia, ib) = (a.reader().ivf().unwrap(), b.reader().ivf().unwrap());
    assert!(matches!(ia, Ivf::Plain { .. }) && matches!(ib, Ivf::Rice(_)));
    for c in 0..ia.n_lists() {
        let (mut la, mut lb) = (Vec::new(), Vec::new());
        ia.append_list(c, &mut la).unwrap();
        ib.append_list(c, &mut lb).unwrap();
        assert_eq!(la, lb, "list {c}");
    }
    // The v4 index records that its (unit) tokens are unit-norm: it renormalises decoded vectors
    // and stores its decoding weights scaled to the residuals' energy, which v2 did not.
    assert!(b.meta().residual.unwrap().unit_norm);
    // The stored weights are v2's times the recorded scale (1 when the held-out check declined it).
    let scale = b.meta().build["residual_scale"].as_f64().unwrap() as f32;
    assert_eq!(b.meta().build["decode_scale"]["applied"].as_f64().unwrap() as f32, scale);
    let floats = |path: &Path| -> Vec<f32> {
        payload(path).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let (buckets_a, buckets_b) = (floats(&v2.join("index/buckets.f32")), floats(&v3.join("buckets.f32")));
    let (cutoffs, weights) = a.reader().buckets().unwrap();
    assert_eq!(buckets_a.len(), buckets_b.len());
    assert_eq!(&buckets_b[..cutoffs.len()], cutoffs, "cutoffs differ");
    let scaled: Vec<f32> = weights.iter().map(|w| w * scale).collect();
    assert_eq!(&buckets_b[cutoffs.len()..], &scaled[..], "weights are not v2's, scaled");
    // Read it with v2's weights and without the flag to compare like with like.
    drop(b);
    let rewrite = |c: Component, bytes: &[u8]| {
        let mut w = index_format::footer::FooterWriter::new(Vec::new(), c.id());
        std::io::Write::write_all(&mut w, bytes).unwrap();
        fs::write(v3.join(c.file_name()), w.finish().unwrap().0).unwrap();
    };
    let mut meta = serde_json::from_slice::<serde_json::Value>(&payload(&v3.join("meta.json"))).unwrap();
    meta["residual"]["unit_norm"] = false.into();
    meta["residual"]["token_norms"] = false.into();
    rewrite(Component::Meta, &serde_json::to_vec_pretty(&meta).unwrap());
    fs::remove_file(v3.join(Component::TokenNorms.file_name())).unwrap();
    rewrite(Component::Buckets, &payload(&v2.join("index/buckets.f32")));
    let b = Segment::open(&v3).unwrap();
    assert!(!b.meta().residual.unwrap().unit_norm);
    let queries = QueryEmbeddings::open(&v2.join("queries.safetensors")).unwrap();
    assert_eq!(run_text(&a, &queries), run_text(&b, &queries));
    for ncells in [1, 2, 4, 16] {
        for threshold in [-1.0, 0.3, 0.5] {
            for ndocs in [1, 4, 32] {
                let p = SearchParams {
                    ncells,
                    centroid_score_threshold: threshold,
                    ndocs,
                    min_centroid_fit: f32::NEG_INFINITY,
                    ..SearchParams::for_k(5)
                };
                assert_eq!(a.search(&queries.queries, &p).unwrap(), b.search(&queries.queries, &p).unwrap());
            }
        }
    }
}

/// Same rankings, scores within 1e-4.
fn compare_runs(got: &str, expected: &str) {
    for (g, e) in got.lines().zip(expected.lines()) {
        let (g, e): (Vec<&str>, Vec<&str>) = (g.split(' ').collect(), e.split(' ').collect());
        assert_eq!((g[0], g[2], g[3]), (e[0], e[2], e[3]), "ranking changed");
        let (gs, es): (f32, f32) = (g[4].parse().unwrap(), e[4].parse().unwrap());
        assert!((gs - es).abs() < 1e-4, "score changed: {gs} vs {es}");
    }
    assert_eq!(got.lines().count(), expected.lines().count());
}

/// Version 7: the centroid-grouped layout WARP mode reads in place (`--warp-layout`).
const V7: Fixture = Fixture {
    version: 7,
    docs: (2031, 40, 24),
    queries: (4054, 3, 5),
    ids: true,
    build_flags: &["--nbits", "2", "--centroids", "24", "--seed", "23", "--warp-layout"],
};

/// The WARP mode's own scores (every centroid probed, nothing rescored) at k = 5: what the
/// stored layout answers.
fn warp_run_text(index: &Segment, queries: &QueryEmbeddings) -> String {
    let params = SearchParams {
        mode: engine::SearchMode::Warp,
        nprobe: Some(24),
        warp_rescore: Some(0),
        min_centroid_fit: f32::NEG_INFINITY,
        ..SearchParams::for_k(5)
    };
    let mut out = String::new();
    for (q, hits) in index.search(&queries.queries, &params).unwrap().iter().enumerate() {
        for (r, h) in hits.iter().enumerate() {
            out += &format!("{q} Q0 {} {} {:.6} golden\n", index.doc_id(h.doc), r + 1, h.score);
        }
    }
    out
}

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v7() {
    create_golden(&V7);
    let dir = golden_dir(7);
    let index = Segment::open(&dir.join("index")).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    fs::write(dir.join("expected_warp.run"), warp_run_text(&index, &queries)).unwrap();
}

#[test]
fn golden_v7_opens_verifies_and_answers_the_same() {
    let index = check_golden(7);
    assert!(index.meta().residual.is_some_and(|r| r.warp_layout && r.token_norms));
    let files = index.reader().warp_files().expect("v7 with --warp-layout stores the layout");
    assert_eq!(files.counts.iter().map(|&n| u64::from(n)).sum::<u64>(), index.meta().n_tokens);
    let dir = golden_dir(7);
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    let expected = fs::read_to_string(dir.join("expected_warp.run")).unwrap();
    compare_runs(&warp_run_text(&index, &queries), &expected);
}
