use std::fs;
use std::io::Write;
use std::path::Path;

use engine::codec::CodecConfig;
use engine::synth::{SynthCorpus, SynthSpec, TokensPerDoc};
use engine::{BuildOptions, CompressedBuilder, CompressedParams, EngineError, Index, SearchParams};
use index_format::footer::FooterWriter;
use index_format::{Component, FormatError, IndexKind, IndexMeta};
use safetensors::Dtype;
use tempfile::TempDir;

use crate::common::*;

/// A small clustered corpus: `n_docs` documents of 8 to 24 tokens, 500 clusters (about 4
/// default centroids per cluster at 1500 documents, as in the 10k benchmark).
fn corpus(n_docs: usize, dim: usize, seed: u64) -> SynthCorpus {
    SynthCorpus::new(SynthSpec {
        n_docs,
        tokens_per_doc: TokensPerDoc::Range { min: 8, max: 24 },
        dim,
        n_clusters: 500,
        noise: 0.35,
        clusters_per_doc: 4,
        seed,
    })
    .unwrap()
}

/// Builds a compressed index of `corpus` at `dest`, training on every token.
fn build(dest: &Path, corpus: &SynthCorpus, params: CompressedParams) -> IndexMeta {
    let dim = corpus.spec().dim;
    let all = corpus.generate_all();
    let mut b = CompressedBuilder::create(dest, dim, params, BuildOptions::default()).unwrap();
    b.train(&all.tokens, (all.tokens.len() / dim) as u64).unwrap();
    let mut off = 0;
    for (i, &l) in all.doclens.iter().enumerate() {
        let n = l as usize * dim;
        b.add(&format!("d{i}"), &all.tokens[off..off + n]).unwrap();
        off += n;
    }
    b.finish().unwrap()
}

fn queries(corpus: &SynthCorpus, n: usize, len: usize) -> Vec<Vec<f32>> {
    let dim = corpus.spec().dim;
    corpus.queries(n, len, 0.3, 7).chunks_exact(len * dim).map(<[f32]>::to_vec).collect()
}

fn recall(got: &[Vec<engine::Hit>], truth: &[Vec<engine::Hit>]) -> f64 {
    let mut hit = 0;
    let mut total = 0;
    for (g, t) in got.iter().zip(truth) {
        total += t.len();
        hit += t.iter().filter(|h| g.iter().any(|x| x.doc == h.doc)).count();
    }
    hit as f64 / total as f64
}

#[test]
fn plaid_recall_against_the_decompressed_oracle() {
    let dir = TempDir::new().unwrap();
    let c = corpus(1500, 64, 11);
    let meta = build(&dir.path().join("i"), &c, CompressedParams::new(2));
    assert_eq!(meta.kind, IndexKind::Residual { nbits: 2 });
    let index = Index::open(&dir.path().join("i")).unwrap();
    index.verify().unwrap();
    let qs = queries(&c, 30, 16);
    let oracle = index.search_decompressed(&qs, 10).unwrap();
    let plaid = index.search(&qs, &SearchParams::for_k(10)).unwrap();
    let r = recall(&plaid, &oracle);
    assert!(r >= 0.99, "PLAID recall@10 against the decompressed oracle is {r}");
    for hits in &plaid {
        assert_eq!(hits.len(), 10);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // A PLAID hit's score is its decompressed MaxSim: the same number the oracle computes.
    for (p, o) in plaid.iter().zip(&oracle) {
        for h in p {
            if let Some(x) = o.iter().find(|x| x.doc == h.doc) {
                assert!((x.score - h.score).abs() < 1e-4, "{} vs {}", x.score, h.score);
            }
        }
    }
}

#[test]
fn exact_tier_scores_with_the_f16_embeddings() {
    let dir = TempDir::new().unwrap();
    let c = corpus(400, 32, 12);
    let params = CompressedParams { store_f16: true, ..CompressedParams::new(2) };
    build(&dir.path().join("i"), &c, params);
    let index = Index::open(&dir.path().join("i")).unwrap();
    index.verify().unwrap();
    assert!(index.reader().has_embeddings());
    let qs = queries(&c, 10, 8);
    let exact = index.search_exhaustive(&qs, 5).unwrap();
    // Exhaustive over decompressed vectors, then every candidate rescored exactly: the exact top-5.
    let p = SearchParams { exhaustive: true, rescore: Some(400), ..SearchParams::for_k(5) };
    let rescored = index.search(&qs, &p).unwrap();
    for (a, b) in rescored.iter().zip(&exact) {
        let (da, db): (Vec<u32>, Vec<u32>) =
            (a.iter().map(|h| h.doc).collect(), b.iter().map(|h| h.doc).collect());
        assert_eq!(da, db);
    }
    // Default PLAID with the exact tier returns exact scores.
    let plaid = index.search(&qs, &SearchParams::for_k(5)).unwrap();
    for (p, e) in plaid.iter().zip(&exact) {
        for h in p {
            if let Some(x) = e.iter().find(|x| x.doc == h.doc) {
                assert!((x.score - h.score).abs() < 1e-4);
            }
        }
    }
    assert!(recall(&plaid, &exact) >= 0.9, "{}", recall(&plaid, &exact));
}

#[test]
fn builds_are_reproducible_with_a_seed() {
    let dir = TempDir::new().unwrap();
    let c = corpus(300, 32, 13);
    let params = CompressedParams { seed: 5, store_f16: true, ..CompressedParams::new(4) };
    build(&dir.path().join("a"), &c, params.clone());
    build(&dir.path().join("b"), &c, params);
    for comp in Component::EVERY {
        let (a, b) =
            (dir.path().join("a").join(comp.file_name()), dir.path().join("b").join(comp.file_name()));
        assert_eq!(a.exists(), b.exists());
        if a.exists() {
            assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "{} differs", comp.file_name());
        }
    }
}

#[test]
fn every_nbits_round_trips_within_its_error_bound() {
    let c = corpus(200, 32, 14);
    let all = c.generate_all();
    let mut errors = Vec::new();
    for nbits in [1, 2, 4] {
        let dir = TempDir::new().unwrap();
        let meta = build(&dir.path().join("i"), &c, CompressedParams::new(nbits));
        assert_eq!(meta.kind.nbits(), nbits);
        let index = Index::open(&dir.path().join("i")).unwrap();
        index.verify().unwrap();
        let size = index.reader().size_bytes();
        let view = index.compressed().unwrap();
        let mut buf = Vec::new();
        let mut sq = 0f64;
        let mut off = 0;
        for (d, &l) in all.doclens.iter().enumerate() {
            view.decompress_into(d as u32, &mut buf).unwrap();
            let orig = &all.tokens[off..off + l as usize * 32];
            assert_eq!(buf.len(), orig.len());
            sq += buf.iter().zip(orig).map(|(a, b)| (a - b) as f64).map(|e| e * e).sum::<f64>();
            off += orig.len();
        }
        let mse = sq / all.tokens.len() as f64 * 32.0; // mean squared error per token vector
        errors.push(mse);
        let per_token = (size as f64) / meta.n_tokens as f64;
        assert!(per_token < 2.0 * 32.0, "nbits {nbits}: {per_token} bytes per token");
    }
    // Unit vectors: the squared error per token must be small and shrink with more bits.
    assert!(errors[0] < 0.2 && errors[1] < errors[0] && errors[2] < errors[1], "{errors:?}");
}

/// Rewrites an index file with a new payload and a valid footer (so only semantic checks catch it).
fn rewrite(path: &Path, component: Component, payload: &[u8]) {
    let mut w = FooterWriter::new(Vec::new(), component.id());
    w.write_all(payload).unwrap();
    fs::write(path, w.finish().unwrap().0).unwrap();
}

fn payload(path: &Path) -> Vec<u8> {
    let b = fs::read(path).unwrap();
    b[..b.len() - 32].to_vec()
}

#[test]
fn verify_catches_corrupt_v2_files() {
    let dir = TempDir::new().unwrap();
    let c = corpus(200, 32, 15);
    let good = dir.path().join("good");
    let meta = build(&good, &c, CompressedParams { n_centroids: Some(64), ..CompressedParams::new(2) });
    assert_eq!(meta.residual.unwrap().n_centroids, 64);
    let copy = |name: &str| {
        let to = dir.path().join(name);
        fs::create_dir_all(&to).unwrap();
        for e in fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        to
    };
    let verify_err = |dir: &Path| Index::open(dir).unwrap().verify().unwrap_err().to_string();
    // A flipped bit in the residuals: checksum.
    let d = copy("bitflip");
    let mut bytes = fs::read(d.join("residuals.u8")).unwrap();
    bytes[3] ^= 0x40;
    fs::write(d.join("residuals.u8"), bytes).unwrap();
    assert!(verify_err(&d).contains("residuals.u8: checksum mismatch"));
    // A code out of range, with a valid checksum.
    let d = copy("code");
    let mut codes = payload(&d.join("codes.u16"));
    codes[10..12].copy_from_slice(&64u16.to_le_bytes());
    rewrite(&d.join("codes.u16"), Component::Codes16, &codes);
    let e = verify_err(&d);
    assert!(e.contains("codes.u16") && e.contains("64 centroids"), "{e}");
    // An IVF list out of order.
    let d = copy("ivf");
    let ivf = payload(&d.join("ivf.u32"));
    let ivf: Vec<u8> = ivf.chunks_exact(4).rev().flatten().copied().collect();
    rewrite(&d.join("ivf.u32"), Component::IvfDocs, &ivf);
    assert!(verify_err(&d).contains("ivf.u32"));
    // An IVF entry pointing past the last document.
    let d = copy("ivfdoc");
    let mut ivf = payload(&d.join("ivf.u32"));
    let n = ivf.len();
    ivf[n - 4..].copy_from_slice(&1_000_000u32.to_le_bytes());
    rewrite(&d.join("ivf.u32"), Component::IvfDocs, &ivf);
    assert!(verify_err(&d).contains("ivf.u32"));
    // Truncated residuals: caught at open, naming the file.
    let d = copy("short");
    let res = payload(&d.join("residuals.u8"));
    rewrite(&d.join("residuals.u8"), Component::Residuals, &res[..res.len() - 8]);
    let e = Index::open(&d).unwrap_err().to_string();
    assert!(e.contains("residuals.u8"), "{e}");
    // Missing centroids: named.
    let d = copy("missing");
    fs::remove_file(d.join("centroids.f16")).unwrap();
    assert!(Index::open(&d).unwrap_err().to_string().contains("centroids.f16"));
    // Swapped files: the footer's component id.
    let d = copy("swapped");
    fs::copy(d.join("ivf_offsets.u64"), d.join("doc_offsets.u64")).unwrap();
    assert!(matches!(Index::open(&d).unwrap_err(), EngineError::Format(FormatError::WrongComponent { .. })));
}

#[test]
fn bad_inputs_to_the_compressed_builder() {
    let dir = TempDir::new().unwrap();
    let p = |n: &str| dir.path().join(n);
    let opts = BuildOptions::default;
    // Dimension not a multiple of 8, unsupported nbits.
    assert!(CompressedBuilder::create(&p("a"), 12, CompressedParams::new(2), opts()).is_err());
    let bad = CompressedParams { codec: CodecConfig::improved(3), ..CompressedParams::new(3) };
    assert!(CompressedBuilder::create(&p("a"), 16, bad, opts()).unwrap_err().to_string().contains("nbits 3"));
    // Adding before training, NaN in the sample or a document.
    let mut b = CompressedBuilder::create(&p("a"), 8, CompressedParams::new(2), opts()).unwrap();
    assert!(b.add("x", &[0.5; 8]).unwrap_err().to_string().contains("train"));
    let mut sample = vec![0.1f32; 80];
    sample[13] = f32::NAN;
    let e = b.train(&sample, 10).unwrap_err();
    assert!(matches!(e, EngineError::NonFinite { row: 1, col: 5, .. }), "{e}");
    let sample = unit_vectors(&mut Rng::new(1), 50, 8);
    b.train(&sample, 50).unwrap();
    let mut doc = sample[..16].to_vec();
    doc[9] = f32::INFINITY;
    assert!(matches!(b.add("x", &doc).unwrap_err(), EngineError::NonFinite { .. }));
    assert!(b.add("x", &[]).is_err());
    drop(b);
    assert!(!p("a").exists(), "a dropped builder leaves nothing behind");
    // A single document with fewer tokens than the requested centroids: C is clamped.
    let mut b = CompressedBuilder::create(
        &p("one"),
        8,
        CompressedParams { n_centroids: Some(1000), ..CompressedParams::new(2) },
        opts(),
    )
    .unwrap();
    let doc = unit_vectors(&mut Rng::new(2), 5, 8);
    b.train(&doc, 5).unwrap();
    assert_eq!(b.n_centroids(), Some(5));
    b.add("only", &doc).unwrap();
    let meta = b.finish().unwrap();
    assert_eq!(meta.residual.unwrap().n_centroids, 5);
    let index = Index::open(&p("one")).unwrap();
    index.verify().unwrap();
    let hits = index.search(&[doc[..8].to_vec()], &SearchParams::for_k(10)).unwrap();
    assert_eq!(hits[0].len(), 1);
    // Every embedding identical: k-means has one distinct point; the index still works.
    let mut b = CompressedBuilder::create(&p("dup"), 8, CompressedParams::new(1), opts()).unwrap();
    let v = unit_vectors(&mut Rng::new(3), 1, 8);
    let same: Vec<f32> = v.iter().copied().cycle().take(8 * 40).collect();
    b.train(&same, 40).unwrap();
    for i in 0..10 {
        b.add(&format!("d{i}"), &same[..32]).unwrap();
    }
    b.finish().unwrap();
    let index = Index::open(&p("dup")).unwrap();
    index.verify().unwrap();
    let hits = index.search(std::slice::from_ref(&v), &SearchParams::for_k(3)).unwrap();
    assert_eq!(hits[0].len(), 3);
    assert!((hits[0][0].score - 1.0).abs() < 0.05, "{}", hits[0][0].score);
    // No documents.
    let mut b = CompressedBuilder::create(&p("none"), 8, CompressedParams::new(2), opts()).unwrap();
    b.train(&sample, 50).unwrap();
    assert!(b.finish().unwrap_err().to_string().contains("no documents"));
}

#[test]
fn cli_builds_searches_and_describes_compressed_indexes() {
    let dir = TempDir::new().unwrap();
    let c = corpus(300, 32, 16);
    let all = c.generate_all();
    let lens: Vec<i64> = all.doclens.iter().map(|&l| l as i64).collect();
    let docs = dir.path().join("docs.safetensors");
    write_embeddings(&docs, &all.tokens, 32, &lens, Dtype::F16);
    let q: Vec<f32> = queries(&c, 4, 8).concat();
    write_queries(&dir.path().join("q.safetensors"), &q, 8, 32);
    let idx = dir.path().join("idx");
    let base = ["build", "--embeddings", s(&docs), "--index", s(&idx)];
    cli_ok(&[&base[..], &["--nbits", "4", "--store-f16", "--centroids", "128", "--seed", "3"][..]].concat());
    let info: serde_json::Value =
        serde_json::from_str(&cli_ok(&["info", "--index", s(&idx), "--json"])).unwrap();
    assert_eq!(info["nbits"], 4);
    assert_eq!(info["n_centroids"], 128);
    assert_eq!(info["format_version"], 2);
    assert!(cli_ok(&["info", "--index", s(&idx)]).contains("centroids      128"));
    assert!(cli_ok(&["verify", "--index", s(&idx)]).starts_with("ok"));
    let search = |extra: &[&str]| {
        let qp = dir.path().join("q.safetensors");
        cli_ok(
            &[&["search", "--index", s(&idx), "--query-embeddings", s(&qp), "-k", "3"][..], extra].concat(),
        )
    };
    let default = search(&[]);
    assert_eq!(default.lines().count(), 12);
    let exhaustive = search(&["--exhaustive", "--rescore", "300"]);
    assert_eq!(default.lines().count(), exhaustive.lines().count());
    assert_eq!(
        search(&["--no-rescore", "--ncells", "4", "--threshold", "0.3", "--ndocs", "64"]).lines().count(),
        12
    );
    cli_err(&[&base[..], &["--nbits", "3", "--overwrite"][..]].concat(), &["--nbits 3"]);
    cli_err(&[&base[..], &["--nbits", "2"][..]].concat(), &["already exists"]);
}
