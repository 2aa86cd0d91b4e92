//! An index file: the input becomes one file of a copy of a small valid index (compressed,
//! uncompressed, or updated with a segment and deletions; any of their files, `manifest.bin`
//! included), which is then opened, searched every way, reranked and verified. See
//! [`colbert_index_fuzz::index_file_bytes`] for how the input's first byte picks the file and how
//! the rest becomes its bytes.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use colbert_index_fuzz::{index_file_bytes, scratch};
use engine::store::{AddOptions, Index, Query, Writer};
use engine::{BuildOptions, CompressedBuilder, CompressedParams, IndexBuilder, SearchParams, Segment};
use libfuzzer_sys::fuzz_target;

const DIM: usize = 16;
const TOKENS: usize = 4;

struct Template {
    dir: PathBuf,
    /// Every file, relative to `dir`, with its original bytes.
    files: Vec<(PathBuf, Vec<u8>)>,
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn doc(i: u64) -> Vec<f32> {
    values(i + 100, TOKENS * DIM)
}

fn compressed(dir: &Path) {
    let params = CompressedParams { n_centroids: Some(8), ..CompressedParams::new(2) };
    let mut b = CompressedBuilder::create(dir, DIM, params, BuildOptions::default()).unwrap();
    b.train(&values(1, 64 * DIM), 64).unwrap();
    for i in 0..12 {
        b.add(&format!("d{i}"), &doc(i)).unwrap();
    }
    b.finish().unwrap();
}

fn files_under(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel)).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            files_under(root, &path, out);
        } else {
            out.push((path.clone(), std::fs::read(root.join(&path)).unwrap()));
        }
    }
}

fn templates() -> &'static [Template] {
    static T: OnceLock<Vec<Template>> = OnceLock::new();
    T.get_or_init(|| {
        let root = scratch().join("templates");
        let plain = root.join("plain");
        let packed = root.join("compressed");
        let updated = root.join("updated");
        let mut b = IndexBuilder::create(&plain, DIM, BuildOptions::default()).unwrap();
        for i in 0..12 {
            b.add(&format!("d{i}"), &doc(i)).unwrap();
        }
        b.finish().unwrap();
        compressed(&packed);
        compressed(&updated);
        let mut w = Writer::open(&updated, "fuzz").unwrap();
        let mut batch = w.begin_add(AddOptions::default()).unwrap();
        for i in 12..15 {
            batch.add(&format!("d{i}"), &doc(i)).unwrap();
        }
        batch.commit().unwrap();
        w.delete(&["d3", "d13"]).unwrap();
        drop(w);
        [plain, packed, updated]
            .into_iter()
            .map(|dir| {
                let mut files = Vec::new();
                files_under(&dir, Path::new(""), &mut files);
                Template { dir, files }
            })
            .collect()
    })
}

/// Everything a reader does with an index; results are ignored, only crashes count.
fn exercise(dir: &Path) {
    let queries = vec![values(7, TOKENS * DIM), values(8, 2 * DIM)];
    let wide = SearchParams {
        ncells: 1000,
        ndocs: 1000,
        centroid_score_threshold: -1e9,
        bf16_centroid_scores: false,
        ..SearchParams::for_k(5)
    };
    if let Ok(seg) = Segment::open(dir) {
        let _ = seg.search(&queries, &SearchParams::for_k(5));
        let _ = seg.search(&queries, &wide);
        let _ = seg.search(&queries, &SearchParams { exhaustive: true, ..SearchParams::for_k(5) });
        let _ = seg.search_exhaustive(&queries, 5);
        let _ = seg.reader().size_bytes();
        for d in 0..seg.n_docs().min(64) as u32 {
            let _ = seg.doc_id(d);
        }
        let _ = seg.verify();
    }
    if let Ok(index) = Index::open(dir) {
        let q = Query::tokens(&queries[0], DIM).unwrap();
        let _ = index.search(q, 5, &wide);
        let _ = index.search(q, 5, &SearchParams::for_k(5));
        let _ = index.rerank(q, &["d1", "d13", "d14", "nope"], 5);
        let _ = index.live_ids();
        let _ = index.verify();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let templates = templates();
    let n: usize = templates.iter().map(|t| t.files.len()).sum();
    let pick = (mode & 0x3f) as usize % n;
    let (t, (rel, original)) =
        templates.iter().flat_map(|t| t.files.iter().map(move |f| (t, f))).nth(pick).unwrap();
    let path = t.dir.join(rel);
    std::fs::write(&path, index_file_bytes(original, mode, rest)).unwrap();
    exercise(&t.dir);
    std::fs::write(&path, original).unwrap();
});
