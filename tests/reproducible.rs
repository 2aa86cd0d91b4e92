//! Same flags, same input, same CPU: byte-identical indexes, whether the machine is idle or
//! busy. Kernels and precision are chosen from CPU features, never by timing, so a loaded
//! machine cannot pick other arithmetic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tempfile::TempDir;

use crate::common::*;

/// Runs `f` while every core (twice over) spins on floating-point work.
fn while_busy<T>(f: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let spinners = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let handles: Vec<_> = (0..spinners)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 1.0f64 + i as f64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x * 1.000_000_1 + 1e-9);
                    }
                }
                x
            })
        })
        .collect();
    let result = f();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    result
}

/// Every file of an index directory (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Builds `args` into `<dir>/idle` and, with every core busy, into `<dir>/busy`, and asserts
/// the two indexes hold the same files with the same bytes.
fn assert_same_bytes_idle_and_busy(dir: &Path, args: &[&str]) {
    let (idle, busy) = (dir.join("idle"), dir.join("busy"));
    cli_ok(&[args, &["--index", s(&idle)]].concat());
    while_busy(|| cli_ok(&[args, &["--index", s(&busy)]].concat()));
    let (a, b) = (files(&idle), files(&busy));
    assert!(a.len() >= 5, "{args:?}: too few files: {:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{args:?}: file lists differ");
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{args:?}: {} differs between the idle and the busy build",
            name.display()
        );
    }
}

#[test]
fn an_embeddings_index_is_the_same_bytes_on_an_idle_and_a_busy_machine() {
    let dir = TempDir::new().unwrap();
    let docs = dir.path().join("docs.safetensors");
    cli_ok(&[
        "synth",
        "--out",
        s(&docs),
        "--docs",
        "1500",
        "--tokens-per-doc",
        "16",
        "--dim",
        "64",
        "--clusters",
        "300",
    ]);
    for (name, flags) in [("nbits2", &["--store-f16"][..]), ("nbits1", &["--nbits", "1"][..])] {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        assert_same_bytes_idle_and_busy(&sub, &[&["build", "--embeddings", s(&docs)][..], flags].concat());
    }
}

#[test]
fn a_text_index_is_the_same_bytes_on_an_idle_and_a_busy_machine() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    // The first 300 Cranfield abstracts, encoded at the default precision (`auto`: bf16 where
    // the CPU's features say so), compressed with the default codec.
    let corpus = std::fs::read_to_string(repo_path("data/cranfield/corpus.jsonl")).unwrap();
    let coll = dir.path().join("corpus.jsonl");
    std::fs::write(&coll, corpus.lines().take(300).collect::<Vec<_>>().join("\n")).unwrap();
    assert_same_bytes_idle_and_busy(
        dir.path(),
        &["build", "--collection", s(&coll), "--model", s(&model), "--nbits", "2"],
    );
}
