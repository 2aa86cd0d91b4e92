//! Exhaustive MaxSim throughput against numpy doing it the fast way, on the same data, in the
//! same run.
//!
//! `cargo bench --bench exhaustive` generates 10,000 documents × 32 tokens × 128 dims and 100
//! queries of 32 tokens (seeded), builds an uncompressed index, times one query per call and the
//! whole batch in one call, then runs `benches/numpy_exhaustive.py` on the same files (with the
//! Python given by `$PYTHON`, default `python3`; it needs numpy and safetensors) and prints the
//! ratio. The top-10 of query 0 is checked against numpy's.
//!
//! Environment: `BENCH_DOCS`, `BENCH_DOC_LEN`, `BENCH_DIM`, `BENCH_QUERIES` override the sizes.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use engine::{BuildOptions, IndexBuilder, Segment};
use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Deterministic unit vectors (the engine's seeded generator → uniform in [-1, 1)).
fn unit_vectors(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut rng = engine::rng::Rng::new(seed);
    let mut next = || (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    let mut v: Vec<f32> = (0..n * dim).map(|_| next()).collect();
    for row in v.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n_docs, doc_len, dim, n_queries) = if quick {
        (200, 8, 32, 3)
    } else {
        (
            env_or("BENCH_DOCS", 10_000),
            env_or("BENCH_DOC_LEN", 32),
            env_or("BENCH_DIM", 128),
            env_or("BENCH_QUERIES", 100),
        )
    };
    let qlen = 32;
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let emb = unit_vectors(1, n_docs * doc_len, dim);
    let queries_flat = unit_vectors(2, n_queries * qlen, dim);
    let emb_path = tmp.path().join("docs.safetensors");
    let q_path = tmp.path().join("queries.safetensors");
    {
        let data: Vec<u8> = emb.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
        let lens: Vec<u8> = (0..n_docs).flat_map(|_| (doc_len as i64).to_le_bytes()).collect();
        let t = vec![
            ("embeddings", TensorView::new(Dtype::F16, vec![n_docs * doc_len, dim], &data).unwrap()),
            ("doclens", TensorView::new(Dtype::I64, vec![n_docs], &lens).unwrap()),
        ];
        safetensors::serialize_to_file(t, None, &emb_path).unwrap();
        let qd: Vec<u8> = queries_flat.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = vec![("queries", TensorView::new(Dtype::F32, vec![n_queries, qlen, dim], &qd).unwrap())];
        safetensors::serialize_to_file(t, None, &q_path).unwrap();
    }
    let index_dir = tmp.path().join("index");
    let mut b = IndexBuilder::create(&index_dir, dim, BuildOptions::default()).unwrap();
    for (i, doc) in emb.chunks_exact(doc_len * dim).enumerate() {
        b.add(&i.to_string(), doc).unwrap();
    }
    b.finish().unwrap();
    let index = Segment::open(&index_dir).unwrap();
    let queries: Vec<Vec<f32>> = queries_flat.chunks_exact(qlen * dim).map(<[f32]>::to_vec).collect();
    let flops_per_query = 2.0 * (qlen * n_docs * doc_len * dim) as f64;
    println!(
        "exhaustive MaxSim: {n_docs} docs × {doc_len} tokens × {dim} dims, {n_queries} queries × {qlen} tokens, {} threads, kernel {}",
        rayon::current_num_threads(),
        engine::maxsim::Kernel::detect().name()
    );

    // Warm-up (page cache, thread pool).
    for q in queries.iter().take(3) {
        index.search_exhaustive(std::slice::from_ref(q), 10).unwrap();
    }
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut first = Vec::new();
    for q in &queries {
        let s = Instant::now();
        let r = index.search_exhaustive(std::slice::from_ref(q), 10).unwrap();
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        if first.is_empty() {
            first = r[0].clone();
        }
    }
    let single_qps = n_queries as f64 / t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let t0 = Instant::now();
    let batched = index.search_exhaustive(&queries, 10).unwrap();
    let batch_qps = n_queries as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(batched[0], first, "batched and single-query results differ");
    println!(
        "colbert-index  one query per call: p50 {:.2} ms  p95 {:.2} ms  {:.1} QPS  ({:.1} GFLOP/s)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        single_qps,
        single_qps * flops_per_query / 1e9
    );
    println!(
        "colbert-index  batch of {n_queries}:        {:.1} QPS  ({:.1} GFLOP/s)",
        batch_qps,
        batch_qps * flops_per_query / 1e9
    );

    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/numpy_exhaustive.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--embeddings", emb_path.to_str().unwrap(), "--queries", q_path.to_str().unwrap()])
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("numpy script prints JSON");
            let np_qps = v["qps"].as_f64().unwrap();
            println!(
                "numpy (BLAS)   one query per call: p50 {:.2} ms  p95 {:.2} ms  {:.1} QPS  blas {}",
                v["p50_ms"].as_f64().unwrap(),
                v["p95_ms"].as_f64().unwrap(),
                np_qps,
                v["blas"]
            );
            println!(
                "ratio vs numpy: one query per call {:.2}×, batched {:.2}×",
                single_qps / np_qps,
                batch_qps / np_qps
            );
            let np_top: Vec<u64> =
                v["top10_q0"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            let ours: Vec<u64> = first.iter().map(|h| h.doc as u64).collect();
            let overlap = ours.iter().filter(|d| np_top.contains(d)).count();
            println!("top-10 agreement with numpy on query 0: {overlap}/10");
            assert!(overlap >= 9, "results disagree with numpy: {ours:?} vs {np_top:?}");
        }
        Ok(o) => println!("numpy baseline failed ({python}): {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("numpy baseline skipped: cannot run {python}: {e}"),
    }
}
