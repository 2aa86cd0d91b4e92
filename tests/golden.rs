//! Golden indexes: `tests/data/golden_v{N}/` holds an index written by format version N, the
//! embeddings and queries it was built from, and the run it answered. Later versions of the
//! library must keep opening it and answer the same. Regenerate (only when adding a new version)
//! with `cargo test --test integration -- --ignored create_golden_v{N}`.

use std::fs;
use std::path::PathBuf;

use engine::embeddings::QueryEmbeddings;
use engine::{Index, SearchParams};
use safetensors::Dtype;

use crate::common::*;

fn golden_dir() -> PathBuf {
    repo_path("tests/data/golden_v1")
}

fn golden_v2_dir() -> PathBuf {
    repo_path("tests/data/golden_v2")
}

/// The run of `queries` at k = 5: exhaustive search (over the decompressed vectors for a
/// compressed index, so that the answer does not depend on the PLAID defaults).
fn run_text(index: &Index, queries: &QueryEmbeddings) -> String {
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

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v1() {
    let dir = golden_dir();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (emb, lens) = random_docs(2024, 25, 9, 16);
    write_embeddings(&dir.join("embeddings.safetensors"), &emb, 16, &lens, Dtype::F16);
    let ids: String = (0..25).map(|i| format!("golden-{i:02}\n")).collect();
    fs::write(dir.join("ids.txt"), ids).unwrap();
    let q = unit_vectors(&mut Rng::new(4048), 2 * 4, 16);
    write_queries(&dir.join("queries.safetensors"), &q, 4, 16);
    cli_ok(&[
        "build",
        "--embeddings",
        s(&dir.join("embeddings.safetensors")),
        "--ids",
        s(&dir.join("ids.txt")),
        "--index",
        s(&dir.join("index")),
        "--nbits",
        "16",
    ]);
    let index = Index::open(&dir.join("index")).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    fs::write(dir.join("expected.run"), run_text(&index, &queries)).unwrap();
}

#[test]
fn golden_v1_opens_verifies_and_answers_the_same() {
    let dir = golden_dir();
    let index = Index::open(&dir.join("index")).expect("golden v1 index opens");
    index.verify().expect("golden v1 index verifies");
    assert_eq!(index.meta().format_version, 1);
    assert_eq!(index.meta().n_docs, 25);
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    let got = run_text(&index, &queries);
    let expected = fs::read_to_string(dir.join("expected.run")).unwrap();
    compare_runs(&got, &expected);
}

#[test]
#[ignore = "writes the golden fixture; run by hand when introducing a format version"]
fn create_golden_v2() {
    let dir = golden_v2_dir();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (emb, lens) = random_docs(2025, 30, 9, 16);
    write_embeddings(&dir.join("embeddings.safetensors"), &emb, 16, &lens, Dtype::F16);
    let q = unit_vectors(&mut Rng::new(4049), 3 * 4, 16);
    write_queries(&dir.join("queries.safetensors"), &q, 4, 16);
    cli_ok(&[
        "build",
        "--embeddings",
        s(&dir.join("embeddings.safetensors")),
        "--index",
        s(&dir.join("index")),
        "--nbits",
        "2",
        "--centroids",
        "16",
        "--seed",
        "7",
    ]);
    let index = Index::open(&dir.join("index")).unwrap();
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    fs::write(dir.join("expected.run"), run_text(&index, &queries)).unwrap();
}

#[test]
fn golden_v2_opens_verifies_and_answers_the_same() {
    let dir = golden_v2_dir();
    let index = Index::open(&dir.join("index")).expect("golden v2 index opens");
    index.verify().expect("golden v2 index verifies");
    assert_eq!(index.meta().format_version, 2);
    assert_eq!(index.meta().kind, index_format::IndexKind::Residual { nbits: 2 });
    assert_eq!(index.meta().residual.unwrap().n_centroids, 16);
    let queries = QueryEmbeddings::open(&dir.join("queries.safetensors")).unwrap();
    let got = run_text(&index, &queries);
    let expected = fs::read_to_string(dir.join("expected.run")).unwrap();
    compare_runs(&got, &expected);
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
