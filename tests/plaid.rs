use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use engine::codec::CodecConfig;
use engine::synth::{SynthCorpus, SynthSpec, TokensPerDoc};
use engine::{
    BuildOptions, CompressedBuilder, CompressedParams, EngineError, SearchMode, SearchParams, Segment,
};
use index_format::footer::FooterWriter;
use index_format::packed::{best_rice_param, put_rice_list, BitWriter};
use index_format::{Codes, Component, FormatError, IndexKind, IndexMeta};
use proptest::prelude::{any, ProptestConfig};
use proptest::{prop_assert, prop_assert_eq, proptest};
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
    let all = corpus.generate_all();
    build_tokens(dest, corpus.spec().dim, &all.tokens, &all.doclens, params)
}

/// Builds a compressed index at `dest` of documents `d0..` with `doclens` tokens each, training on
/// every token.
fn build_tokens(
    dest: &Path,
    dim: usize,
    tokens: &[f32],
    doclens: &[u32],
    params: CompressedParams,
) -> IndexMeta {
    let mut b = CompressedBuilder::create(dest, dim, params, BuildOptions::default()).unwrap();
    b.train(tokens, (tokens.len() / dim) as u64).unwrap();
    let mut off = 0;
    for (i, &l) in doclens.iter().enumerate() {
        let n = l as usize * dim;
        b.add(&format!("d{i}"), &tokens[off..off + n]).unwrap();
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
    let index = Segment::open(&dir.path().join("i")).unwrap();
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

/// Stage 1 in bf16 (where the CPU runs it fast) against f32, end to end: nearly the same
/// results down to the most cut-sensitive settings, and final scores that do not depend on
/// stage 1. (This synthetic data has few near ties, so it would pass without the f32 re-scoring
/// of the picked cells too; `refined_cells_match_the_f32_selection` in plaid.rs guards that.)
/// A training sample bounded in memory keeps a fixed number of tokens, and when it had to leave
/// some out, the default centroid count is capped at one per 8 fit tokens (an explicit count is
/// kept); a sample that kept everything trains exactly like the plain `train`.
#[test]
fn bounded_training_sample_caps_centroids() {
    use engine::index::{TrainingSample, MIN_POINTS_PER_CENTROID};
    let c = corpus(1500, 32, 11);
    let all = c.generate_all();
    let n = all.tokens.len() / 32;
    let build_with = |capacity: usize, n_centroids: Option<usize>| {
        let dir = TempDir::new().unwrap();
        let params = CompressedParams { n_centroids, ..CompressedParams::new(2) };
        let mut b =
            CompressedBuilder::create(&dir.path().join("i"), 32, params, BuildOptions::default()).unwrap();
        let mut sample = TrainingSample::new(32, capacity, 5);
        let mut off = 0;
        for &l in &all.doclens {
            sample.add(&all.tokens[off..off + l as usize * 32]);
            off += l as usize * 32;
        }
        assert_eq!(sample.seen(), n as u64);
        assert_eq!(sample.len(), capacity.min(n));
        b.train_sample(sample, n as u64).unwrap();
        b.n_centroids().unwrap()
    };
    let default_k = engine::kmeans::default_num_centroids(n);
    assert!(default_k >= 1024, "{default_k}");
    // 4000 kept, 3800 fit after the held-out 5%: 475 per 8 -> 256.
    assert_eq!(build_with(4000, None), 256);
    assert_eq!(3800 / MIN_POINTS_PER_CENTROID, 475);
    assert_eq!(build_with(4000, Some(100)), 100);
    assert_eq!(build_with(n, None), default_k);
    // Kept everything: the same index as `train` on all tokens.
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a, b) = (a.path().join("i"), b.path().join("i"));
    build(&a, &c, CompressedParams::new(2));
    let params = CompressedParams::new(2);
    let mut builder = CompressedBuilder::create(&b, 32, params, BuildOptions::default()).unwrap();
    let mut sample = TrainingSample::new(32, n, 0);
    sample.add(&all.tokens);
    builder.train_sample(sample, n as u64).unwrap();
    let mut off = 0;
    for (i, &l) in all.doclens.iter().enumerate() {
        builder.add(&format!("d{i}"), &all.tokens[off..off + l as usize * 32]).unwrap();
        off += l as usize * 32;
    }
    builder.finish().unwrap();
    for f in ["centroids.f16", "codes.rice", "residuals.u8", "ivf.rice"] {
        assert_eq!(fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap(), "{f}");
    }
}

#[test]
fn bf16_centroid_scores_agree_with_f32() {
    let dir = TempDir::new().unwrap();
    let c = corpus(1500, 64, 5);
    build(&dir.path().join("i"), &c, CompressedParams::new(2));
    let index = Segment::open(&dir.path().join("i")).unwrap();
    let qs = queries(&c, 40, 16);
    if !engine::search::bf16_centroid_scores_available() {
        eprintln!("bf16 centroid scores not used on this CPU: both runs below are f32");
    }
    for (ncells, ndocs) in [(2, 512), (1, 32), (1, 8), (3, 16)] {
        let fast =
            SearchParams { ncells, ndocs, min_centroid_fit: f32::NEG_INFINITY, ..SearchParams::for_k(10) };
        let exact = SearchParams { bf16_centroid_scores: false, ..fast.clone() };
        let (a, b) = (index.search(&qs, &fast).unwrap(), index.search(&qs, &exact).unwrap());
        let r = recall(&a, &b);
        assert!(r >= 0.99, "ncells {ncells}, ndocs {ndocs}: bf16 results hold {r} of the f32 ones");
        for (x, y) in a.iter().zip(&b) {
            for h in x {
                if let Some(g) = y.iter().find(|g| g.doc == h.doc) {
                    assert_eq!(g.score, h.score, "final scores do not depend on stage 1");
                }
            }
        }
    }
}

/// Stage 1 splits its product across threads in fixed blocks of centroids (and stages 2–4 split
/// their candidates), as does WARP mode's probe selection: one query answers with the same bits
/// on one thread and on several.
#[test]
fn one_query_gives_the_same_bits_on_one_thread_and_several() {
    let dir = TempDir::new().unwrap();
    let c = corpus(1500, 64, 11);
    // More centroids than two stage-1 blocks, so that the product really is split.
    let params = CompressedParams { n_centroids: Some(5000), kmeans_iters: 1, ..CompressedParams::new(2) };
    let meta = build(&dir.path().join("i"), &c, params);
    assert!(meta.residual.unwrap().n_centroids > 4224, "{meta:?}");
    let index = Segment::open(&dir.path().join("i")).unwrap();
    let qs = queries(&c, 12, 16);
    // WARP mode too: its 8-bit centroid scores are chosen from block by block on each thread and
    // the threads' choices merged.
    let modes = [
        (SearchMode::Plaid, true),
        (SearchMode::Plaid, false),
        (SearchMode::Warp, true),
        (SearchMode::Warp, false),
    ];
    for (mode, bf16_centroid_scores) in modes {
        let params = SearchParams {
            bf16_centroid_scores,
            min_centroid_fit: f32::NEG_INFINITY,
            mode,
            ..SearchParams::for_k(10)
        };
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                qs.iter().map(|q| index.search_one(q, &params, None).unwrap()).collect::<Vec<_>>()
            })
        };
        let one = on(1);
        for threads in [2, 3] {
            let many = on(threads);
            for (a, b) in one.iter().zip(&many) {
                let bits =
                    |h: &[engine::Hit]| h.iter().map(|h| (h.doc, h.score.to_bits())).collect::<Vec<_>>();
                assert_eq!(
                    bits(a),
                    bits(b),
                    "{threads} threads, {mode:?}, rounded scores: {bf16_centroid_scores}"
                );
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
    let index = Segment::open(&dir.path().join("i")).unwrap();
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
        let index = Segment::open(&dir.path().join("i")).unwrap();
        index.verify().unwrap();
        let size = index.reader().size_bytes();
        let view = index.compressed().unwrap();
        // The index stores each document's tokens ordered by centroid (ties in input order):
        // reorder the originals the same way to pair them with the decompressed tokens.
        let centroids: Vec<f32> = index.reader().centroids().unwrap().iter().map(|v| v.to_f32()).collect();
        let assigned = engine::kmeans::assign(&all.tokens, &centroids, 32).unwrap();
        let mut buf = Vec::new();
        let mut sq = 0f64;
        let mut off = 0;
        for (d, &l) in all.doclens.iter().enumerate() {
            view.decompress_into(d as u32, &mut buf).unwrap();
            let mut order: Vec<usize> = (off / 32..off / 32 + l as usize).collect();
            order.sort_by_key(|&t| assigned[t]);
            let orig: Vec<f32> =
                order.iter().flat_map(|&t| all.tokens[t * 32..(t + 1) * 32].to_vec()).collect();
            assert_eq!(buf.len(), orig.len());
            sq += buf.iter().zip(&orig).map(|(a, b)| (a - b) as f64).map(|e| e * e).sum::<f64>();
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

/// Unit-norm inputs are recorded as such and decode to unit vectors, closer to the originals than
/// the raw reconstruction; other inputs decode as centroid plus residual, unscaled.
#[test]
fn unit_norm_inputs_decode_to_unit_vectors() {
    let c = corpus(150, 32, 9);
    let all = c.generate_all();
    let dir = TempDir::new().unwrap();
    for (name, scale) in [("unit", 1.0f32), ("scaled", 1.5)] {
        let tokens: Vec<f32> = all.tokens.iter().map(|v| v * scale).collect();
        let path = dir.path().join(name);
        let mut b =
            CompressedBuilder::create(&path, 32, CompressedParams::new(1), BuildOptions::default()).unwrap();
        b.train(&tokens, (tokens.len() / 32) as u64).unwrap();
        let mut off = 0;
        for (i, &l) in all.doclens.iter().enumerate() {
            b.add(&format!("d{i}"), &tokens[off..off + l as usize * 32]).unwrap();
            off += l as usize * 32;
        }
        let meta = b.finish().unwrap();
        assert_eq!(meta.residual.unwrap().unit_norm, scale == 1.0, "{name}");
        // Only a renormalising index may store decoding weights scaled up to the residuals'
        // energy, and then only the scale the held-out check chose.
        let residual_scale = meta.build["residual_scale"].as_f64().unwrap();
        let check = &meta.build["decode_scale"];
        assert!(check["energy_scale"].as_f64().unwrap() > 1.0, "{name}: {check}");
        let expected = if scale == 1.0 { check["applied"].as_f64().unwrap() } else { 1.0 };
        assert_eq!(residual_scale, expected, "{name}: {check}");
        let index = Segment::open(&path).unwrap();
        let view = index.compressed().unwrap();
        let mut buf = Vec::new();
        let norms: Vec<f32> = (0..all.doclens.len() as u32)
            .flat_map(|d| {
                view.decompress_into(d, &mut buf).unwrap();
                buf.chunks_exact(32).map(|t| t.iter().map(|v| v * v).sum::<f32>().sqrt()).collect::<Vec<_>>()
            })
            .collect();
        if scale == 1.0 {
            // Scaled by the stored f16 factor: within its rounding (at most 2^-11 relative) of 1.
            assert!(norms.iter().all(|n| (n - 1.0).abs() < 5e-4), "{name}");
        } else {
            // Not renormalised: the decoded norms follow the inputs' 1.5, not 1.
            let mean = norms.iter().sum::<f32>() / norms.len() as f32;
            assert!((mean - 1.5).abs() < 0.1, "{name}: mean decoded norm {mean}");
        }
    }
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

/// Copies every file of index `from` into a new directory `to`.
fn copy_index(from: &Path, to: &Path) -> PathBuf {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

fn verify_err(dir: &Path) -> String {
    Segment::open(dir).unwrap().verify().unwrap_err().to_string()
}

fn open_err(dir: &Path) -> String {
    Segment::open(dir).unwrap_err().to_string()
}

/// The inverted file of a v3 or v4 index, decoded: one list per centroid.
fn ivf_lists(dir: &Path) -> Vec<Vec<u32>> {
    let index = Segment::open(dir).unwrap();
    let ivf = index.reader().ivf().unwrap();
    (0..ivf.n_lists())
        .map(|c| {
            let mut l = Vec::new();
            ivf.append_list(c, &mut l).unwrap();
            l
        })
        .collect()
}

/// Rewrites the three IVF files of the v4 index in `dir` to hold `lists`, Rice-coded with the
/// writer's own parameter choice.
fn write_ivf_lists(dir: &Path, lists: &[Vec<u32>]) {
    let mut w = BitWriter::new(Vec::new());
    let (mut offsets, mut params) = (vec![0u64], Vec::new());
    for l in lists {
        let (k, _) = best_rice_param(l);
        put_rice_list(&mut w, l, k).unwrap();
        offsets.push(w.bits());
        params.push(k as u8);
    }
    rewrite(&dir.join("ivf.rice"), Component::IvfRice, &w.finish().unwrap());
    let offsets: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
    rewrite(&dir.join("ivf_bit_offsets.u64"), Component::IvfBitOffsets, &offsets);
    rewrite(&dir.join("ivf_rice_k.u8"), Component::IvfRiceK, &params);
}

/// A copy of index `good` at `to` with the payload of `component` changed by `edit` and its
/// footer rewritten to match, so that only the semantic checks can catch it.
fn edited_copy(good: &Path, to: &Path, component: Component, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let d = copy_index(good, to);
    let path = d.join(component.file_name());
    let mut bytes = payload(&path);
    edit(&mut bytes);
    rewrite(&path, component, &bytes);
    d
}

/// Applies `edit` to `bytes` viewed as little-endian u64 values.
fn edit_u64s(bytes: &mut Vec<u8>, edit: impl FnOnce(&mut Vec<u64>)) {
    let mut v: Vec<u64> = bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).collect();
    edit(&mut v);
    *bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
}

/// The codes of every document of the index in `dir`, in stored order.
fn doc_codes(dir: &Path) -> Vec<Vec<u32>> {
    let index = Segment::open(dir).unwrap();
    let (codes, offsets) = (index.reader().codes().unwrap(), index.reader().doc_offsets());
    (0..offsets.len() - 1)
        .map(|d| {
            let mut v = Vec::new();
            codes.doc_tokens_into(d, offsets[d] as usize..offsets[d + 1] as usize, &mut v).unwrap();
            v
        })
        .collect()
}

/// Rewrites `codes.rice` and `code_offsets.packed` of the v4 index in `dir` to hold `docs`
/// (each sorted), as the writer codes them.
fn write_doc_codes(dir: &Path, docs: &[Vec<u32>], n_centroids: u64) {
    let (stream, offsets) = index_format::runs::encode_docs(docs, n_centroids);
    rewrite(&dir.join("codes.rice"), Component::CodesRice, &stream);
    rewrite(&dir.join("code_offsets.packed"), Component::CodeOffsets, &offsets);
}

/// Format v3 code checks, on copies of the committed golden v3 index (24 centroids: 5-bit codes).
#[test]
fn verify_catches_corrupt_v3_codes() {
    let dir = TempDir::new().unwrap();
    let good = repo_path("tests/data/golden_v3/index");
    let edited = |name: &str, comp: Component, edit: &dyn Fn(&mut Vec<u8>)| {
        edited_copy(&good, &dir.path().join(name), comp, edit)
    };
    let codes = Component::CodesPacked;
    // A code out of range (token 3 is bits 15..20), with a valid checksum.
    let d = edited("code", codes, &|b| edit_u64s(b, |w| w[0] |= 31 << 15));
    let e = verify_err(&d);
    assert!(
        e.contains("codes.packed") && e.contains("token 3 has code 31") && e.contains("24 centroids"),
        "{e}"
    );
    // Searching it is an error naming the file, not a panic.
    let index = Segment::open(&d).unwrap();
    let probe_all =
        SearchParams { ncells: 24, min_centroid_fit: f32::NEG_INFINITY, ..SearchParams::for_k(3) };
    let q = vec![vec![0.25f32; 16 * 2]];
    for e in [index.search(&q, &probe_all).unwrap_err(), index.search_decompressed(&q, 3).unwrap_err()] {
        let e = e.to_string();
        assert!(
            e.contains("codes.packed: corrupt index: document 0: it has code 31, but there are 24"),
            "{e}"
        );
    }
    // A bit set in the padding word of the codes.
    let d = edited("codepad", codes, &|b| *b.last_mut().unwrap() = 0x80);
    assert!(verify_err(&d).contains("codes.packed: corrupt index: nonzero bits after the last code"));
    // Truncated codes (one word short, footer rewritten): caught at open, naming the file.
    let d = edited("shortcodes", codes, &|b| b.truncate(b.len() - 8));
    let e = open_err(&d);
    assert!(e.contains("codes.packed") && e.contains("padding word"), "{e}");
}

#[test]
fn verify_catches_corrupt_v4_files() {
    let dir = TempDir::new().unwrap();
    let c = corpus(200, 32, 15);
    let good = dir.path().join("good");
    // 48 centroids: 6-bit codes, so a code can be out of range.
    let meta = build(&good, &c, CompressedParams { n_centroids: Some(48), ..CompressedParams::new(2) });
    assert_eq!(meta.residual.unwrap().n_centroids, 48);
    assert_eq!(meta.format_version, index_format::FORMAT_VERSION);
    let copy = |name: &str| copy_index(&good, &dir.path().join(name));
    let edited = |name: &str, comp: Component, edit: &dyn Fn(&mut Vec<u8>)| {
        edited_copy(&good, &dir.path().join(name), comp, edit)
    };
    let (codes, rice, bit_offsets, rice_k) =
        (Component::CodesRice, Component::IvfRice, Component::IvfBitOffsets, Component::IvfRiceK);
    // A flipped bit in the residuals: checksum.
    let d = copy("bitflip");
    let mut bytes = fs::read(d.join("residuals.u8")).unwrap();
    bytes[3] ^= 0x40;
    fs::write(d.join("residuals.u8"), bytes).unwrap();
    assert!(verify_err(&d).contains("residuals.u8: checksum mismatch"));
    // A code out of range (document 0's last token in centroid 63), with valid checksums.
    let mut docs = doc_codes(&good);
    *docs[0].last_mut().unwrap() = 63;
    let d = copy("code");
    write_doc_codes(&d, &docs, 48);
    let e = verify_err(&d);
    assert!(
        e.contains("codes.rice") && e.contains("document 0 does not decode: it decodes to code 63"),
        "{e}"
    );
    // Searching it is an error naming the file, not a panic: PLAID probing every list, and the
    // exhaustive search over decompressed vectors.
    let index = Segment::open(&d).unwrap();
    let probe_all =
        SearchParams { ncells: 48, min_centroid_fit: f32::NEG_INFINITY, ..SearchParams::for_k(3) };
    let q = queries(&c, 1, 4);
    for e in [index.search(&q, &probe_all).unwrap_err(), index.search_decompressed(&q, 3).unwrap_err()] {
        let e = e.to_string();
        assert!(
            e.contains(
                "codes.rice: corrupt index: document 0: it decodes to code 63, which is not a centroid"
            ),
            "{e}"
        );
    }
    // A document whose codes are one token short, or whose offsets decrease: named, and a
    // search is an error, not a panic.
    let mut docs = doc_codes(&good);
    docs[7].pop();
    let d = copy("short-doc");
    write_doc_codes(&d, &docs, 48);
    let e = verify_err(&d);
    assert!(e.contains("codes.rice") && e.contains("document 7 does not decode"), "{e}");
    assert!(Segment::open(&d)
        .unwrap()
        .search_decompressed(&q, 3)
        .unwrap_err()
        .to_string()
        .contains("document 7"));
    let d = edited("offsets-decrease", Component::CodeOffsets, &|b| {
        // Offsets are at least 7 bits wide: set every bit of document 5's, so it points past 6's.
        let w = index_format::runs::offset_bits(
            (fs::metadata(good.join("codes.rice")).unwrap().len() - 32) as u64,
        );
        for bit in 5 * w as usize..6 * w as usize {
            b[bit / 8] |= 1 << (bit % 8);
        }
    });
    let e = verify_err(&d);
    assert!(e.contains("codes.rice") && e.contains("bit offsets decrease"), "{e}");
    // A bit set in the padding word of the codes, or of their offsets.
    let d = edited("codepad", codes, &|b| *b.last_mut().unwrap() = 0x80);
    assert!(verify_err(&d).contains("codes.rice: corrupt index: nonzero bits after the last document"));
    let d = edited("offpad", Component::CodeOffsets, &|b| *b.last_mut().unwrap() = 0x80);
    assert!(verify_err(&d).contains("code_offsets.packed: corrupt index: nonzero bits after the last offset"));
    // Truncated codes (one word short, footer rewritten): caught at open, naming both files.
    let d = edited("shortcodes", codes, &|b| b.truncate(b.len() - 8));
    let e = open_err(&d);
    assert!(e.contains("code_offsets.packed") && e.contains("codes.rice"), "{e}");
    // Truncated file (footer cut off): the footer check names it.
    let d = copy("cutcodes");
    let raw = fs::read(d.join("codes.rice")).unwrap();
    fs::write(d.join("codes.rice"), &raw[..raw.len() - 5]).unwrap();
    assert!(open_err(&d).contains("codes.rice"));
    // Truncated IVF stream: caught at open, naming both IVF files.
    let d = edited("shortivf", rice, &|b| b.truncate(b.len() - 16));
    let e = open_err(&d);
    assert!(e.contains("ivf_bit_offsets.u64") && e.contains("ivf.rice"), "{e}");
    // A Rice parameter above 32.
    let d = edited("param", rice_k, &|k| k[5] = 33);
    let e = open_err(&d);
    assert!(e.contains("ivf_rice_k.u8") && e.contains("centroid 5 has Rice parameter 33"), "{e}");
    // A bit offset past the end of the stream, last or in the middle.
    let d = edited("offsetend", bit_offsets, &|b| edit_u64s(b, |o| *o.last_mut().unwrap() += 1 << 20));
    let e = open_err(&d);
    assert!(e.contains("ivf_bit_offsets.u64") && e.contains("past the end of ivf.rice"), "{e}");
    let d = edited("offsetmid", bit_offsets, &|b| edit_u64s(b, |o| o[10] = u64::MAX));
    let e = open_err(&d);
    assert!(e.contains("ivf_bit_offsets.u64") && e.contains("decrease at centroid 10"), "{e}");
    // A changed Rice parameter (of the longest list): the lists no longer decode to the codes'
    // pairs.
    let lists = ivf_lists(&good);
    let (full, _) = lists.iter().enumerate().max_by_key(|(_, l)| l.len()).unwrap();
    let d = edited("paramshift", rice_k, &|k| k[full] += 1);
    assert!(verify_err(&d).contains("ivf.rice"));
    // Lists that do not match the codes: a document added to a list, or removed from it.
    let absent = (0..200u32).find(|d| !lists[full].contains(d)).unwrap();
    let with_lists = |name: &str, change: &dyn Fn(&mut Vec<u32>)| {
        let d = copy(name);
        let mut l = lists.clone();
        change(&mut l[full]);
        l[full].sort_unstable();
        write_ivf_lists(&d, &l);
        d
    };
    let e = verify_err(&with_lists("extra", &|l| l.push(absent)));
    assert!(
        e.contains("ivf.rice") && e.contains(&format!("lists document {absent}, which has no token")),
        "{e}"
    );
    let e = verify_err(&with_lists("missingdoc", &|l| {
        l.remove(0);
    }));
    let dropped = lists[full][0];
    assert!(
        e.contains(&format!("document {dropped} has a token in centroid {full} but is not in its list")),
        "{e}"
    );
    // A document past the last one: verify names it, and a search that probes the list fails
    // with the same file named instead of panicking.
    let d = with_lists("pastend", &|l| l.push(1_000_000));
    let e = verify_err(&d);
    assert!(
        e.contains("ivf.rice") && e.contains("lists document 1000000, but there are 200 documents"),
        "{e}"
    );
    let index = Segment::open(&d).unwrap();
    let e = index.search(&q, &probe_all).unwrap_err().to_string();
    assert!(e.contains("ivf.rice") && e.contains("document 1000000"), "{e}");
    // Nonzero padding after the last list.
    let d = edited("ivfpad", rice, &|b| {
        let n = b.len();
        b[n - 2] = 1;
    });
    assert!(verify_err(&d).contains("ivf.rice: corrupt index: nonzero bits after the last list"));
    // Missing IVF: named.
    let d = copy("missing");
    fs::remove_file(d.join("ivf.rice")).unwrap();
    assert!(open_err(&d).contains("ivf.rice"));
    // Swapped files: the footer's component id.
    let d = copy("swapped");
    fs::copy(d.join("ivf_bit_offsets.u64"), d.join("doc_offsets.u64")).unwrap();
    assert!(matches!(
        Segment::open(&d).unwrap_err(),
        EngineError::Format(FormatError::WrongComponent { .. })
    ));
}

/// Format v2 checks, on copies of the committed golden v2 index (16 centroids, 30 documents).
#[test]
fn verify_catches_corrupt_v2_files() {
    let dir = TempDir::new().unwrap();
    let good = repo_path("tests/data/golden_v2/index");
    let edited = |name: &str, comp: Component, edit: &dyn Fn(&mut Vec<u8>)| {
        edited_copy(&good, &dir.path().join(name), comp, edit)
    };
    // A code out of range, with a valid checksum.
    let d = edited("code", Component::Codes16, &|c| c[10..12].copy_from_slice(&16u16.to_le_bytes()));
    let e = verify_err(&d);
    assert!(e.contains("codes.u16") && e.contains("16 centroids"), "{e}");
    // An IVF list out of order.
    let d = edited("ivf", Component::IvfDocs, &|b| *b = b.chunks_exact(4).rev().flatten().copied().collect());
    assert!(verify_err(&d).contains("ivf.u32"));
    // An IVF entry pointing past the last document.
    let d = edited("ivfdoc", Component::IvfDocs, &|b| {
        let n = b.len();
        b[n - 4..].copy_from_slice(&1_000_000u32.to_le_bytes());
    });
    assert!(verify_err(&d).contains("ivf.u32"));
    // IVF offsets that decrease: caught at open.
    let d = edited("ivfoff", Component::IvfOffsets, &|b| edit_u64s(b, |o| o[1] = u64::MAX));
    let e = open_err(&d);
    assert!(e.contains("ivf_offsets.u64") && e.contains("decrease at centroid"), "{e}");
    // Truncated residuals: caught at open, naming the file.
    let d = edited("short", Component::Residuals, &|b| b.truncate(b.len() - 8));
    assert!(open_err(&d).contains("residuals.u8"));
    // Missing centroids: named.
    let d = copy_index(&good, &dir.path().join("missing"));
    fs::remove_file(d.join("centroids.f16")).unwrap();
    assert!(open_err(&d).contains("centroids.f16"));
}

/// Removes a v6 index's norm factors (`norms.f16`, and `token_norms` from its metadata), so
/// that it decodes its tokens as older versions do.
fn strip_norms(dir: &Path) {
    let meta_path = dir.join(Component::Meta.file_name());
    let bytes = fs::read(&meta_path).unwrap();
    let mut meta: IndexMeta = serde_json::from_slice(&bytes[..bytes.len() - 32]).unwrap();
    meta.residual.as_mut().unwrap().token_norms = false;
    let mut w = FooterWriter::new(Vec::new(), Component::Meta.id());
    w.write_all(&serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    fs::write(&meta_path, w.finish().unwrap().0).unwrap();
    fs::remove_file(dir.join(Component::TokenNorms.file_name())).unwrap();
}

/// Writes the v4 index `from` as a v2 index at `to`: u16 codes, plain IVF, version 2 footers
/// and metadata; every other payload unchanged.
fn transcode_to_v2(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let index = Segment::open(from).unwrap();
    let r = index.reader();
    let put = |c: Component, payload: &[u8]| {
        let mut w = FooterWriter::new(Vec::new(), c.id());
        w.write_all(payload).unwrap();
        let mut file = w.finish().unwrap().0;
        let n = file.len();
        file[n - 24..n - 20].copy_from_slice(&2u32.to_le_bytes());
        fs::write(to.join(c.file_name()), file).unwrap();
    };
    let narrow: Vec<u8> = all_codes(r).iter().flat_map(|&c| (c as u16).to_le_bytes()).collect();
    put(Component::Codes16, &narrow);
    let ivf = r.ivf().unwrap();
    let (mut offsets, mut docs) = (vec![0u64], Vec::new());
    for c in 0..ivf.n_lists() {
        ivf.append_list(c, &mut docs).unwrap();
        offsets.push(docs.len() as u64);
    }
    put(Component::IvfOffsets, &offsets.iter().flat_map(|o| o.to_le_bytes()).collect::<Vec<u8>>());
    put(Component::IvfDocs, &docs.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<u8>>());
    for (c, _) in r.file_sizes() {
        match c {
            Component::Meta => {
                let mut meta = r.meta().clone();
                meta.format_version = 2;
                if let Some(r) = meta.residual.as_mut() {
                    r.token_norms = false;
                }
                put(c, &serde_json::to_vec_pretty(&meta).unwrap());
            }
            Component::TokenNorms
            | Component::CodesPacked
            | Component::CodesRice
            | Component::CodeOffsets
            | Component::IvfBitOffsets
            | Component::IvfRiceK
            | Component::IvfRice => {}
            _ => put(c, &payload(&from.join(c.file_name()))),
        }
    }
}

/// The same index read as v4 (run-coded codes, Rice-coded IVF) and as v2 (transcoded) answers
/// identically, over PLAID settings that exercise every stage.
#[test]
fn v4_and_v2_forms_of_one_index_answer_identically() {
    let dir = TempDir::new().unwrap();
    let c = corpus(1500, 64, 21);
    let v4 = dir.path().join("v4");
    let v2 = dir.path().join("v2");
    build(&v4, &c, CompressedParams { n_centroids: Some(700), ..CompressedParams::new(2) });
    transcode_to_v2(&v4, &v2);
    let (a, b) = (Segment::open(&v2).unwrap(), Segment::open(&v4).unwrap());
    a.verify().unwrap();
    b.verify().unwrap();
    assert_eq!((a.meta().format_version, b.meta().format_version), (2, index_format::FORMAT_VERSION));
    // Smaller than v2 but for v6's norm factors, which v2 has no room for.
    let norms = b.reader().file_sizes().into_iter().find(|(c, _)| *c == Component::TokenNorms).unwrap().1;
    assert!(a.reader().size_bytes() > b.reader().size_bytes() - norms);
    // Both decode to compare like with like: without its norm factors, v6 decodes as v2 does
    // (through lookup tables it would agree within their rounding only).
    drop(b);
    strip_norms(&v4);
    let b = Segment::open(&v4).unwrap();
    b.verify().unwrap();
    let qs = queries(&c, 12, 16);
    for (ncells, ndocs, threshold) in [(1, 64, 0.45), (4, 256, 0.45), (8, 1024, 0.3), (16, 32, -1.0)] {
        let p =
            SearchParams { ncells, ndocs, centroid_score_threshold: threshold, ..SearchParams::for_k(10) };
        assert_eq!(a.search(&qs, &p).unwrap(), b.search(&qs, &p).unwrap(), "ncells {ncells} ndocs {ndocs}");
    }
    assert_eq!(a.search_decompressed(&qs, 10).unwrap(), b.search_decompressed(&qs, 10).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Small indexes of random shape (centroid counts giving every code width from 1 to 7 bits,
    /// documents of 1 to 40 tokens): they verify (codes in range, lists exactly the codes'
    /// pairs), and every list is the documents having a token in that centroid.
    #[test]
    fn random_index_shapes_round_trip(
        n_centroids in 1usize..=100,
        lens in proptest::collection::vec(1usize..=40, 1..60),
        seed in any::<u64>(),
    ) {
        let dir = TempDir::new().unwrap();
        let dim = 8;
        let tokens = unit_vectors(&mut Rng::new(seed), lens.iter().sum(), dim);
        let params = CompressedParams { n_centroids: Some(n_centroids), seed, ..CompressedParams::new(1) };
        let mut b = CompressedBuilder::create(&dir.path().join("i"), dim, params, BuildOptions::default()).unwrap();
        b.train(&tokens, (tokens.len() / dim) as u64).unwrap();
        let mut off = 0;
        for (i, &l) in lens.iter().enumerate() {
            b.add(&format!("d{i}"), &tokens[off..off + l * dim]).unwrap();
            off += l * dim;
        }
        let meta = b.finish().unwrap();
        let index = Segment::open(&dir.path().join("i")).unwrap();
        index.verify().unwrap();
        let c = meta.residual.unwrap().n_centroids as usize;
        prop_assert!(matches!(index.reader().codes().unwrap(), Codes::Runs(_)));
        let codes = all_codes(index.reader());
        let mut expected = vec![Vec::new(); c];
        let mut t = 0;
        for (doc, &l) in lens.iter().enumerate() {
            let mut cents: Vec<u32> = codes[t..t + l].to_vec();
            prop_assert!(cents.windows(2).all(|w| w[0] <= w[1]), "tokens not ordered by centroid");
            cents.dedup();
            for cent in cents {
                expected[cent as usize].push(doc as u32);
            }
            t += l;
        }
        prop_assert_eq!(ivf_lists(&dir.path().join("i")), expected);
    }
}

#[test]
fn bad_inputs_to_the_compressed_builder() {
    let dir = TempDir::new().unwrap();
    let p = |n: &str| dir.path().join(n);
    let opts = BuildOptions::default;
    // Dimension not a multiple of 8, unsupported nbits.
    assert!(CompressedBuilder::create(&p("a"), 12, CompressedParams::new(2), opts()).is_err());
    let bad = CompressedParams { codec: CodecConfig::per_dim(3), ..CompressedParams::new(3) };
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
    let index = Segment::open(&p("one")).unwrap();
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
    let index = Segment::open(&p("dup")).unwrap();
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
    assert_eq!(info["format_version"], index_format::FORMAT_VERSION);
    assert_eq!(info["n_centroids"], 128);
    let parts = &info["bytes_per_token_by_part"];
    // 16 bytes of residual codes and (unit-norm tokens, v6) a 2-byte norm factor per token.
    assert!((parts["residuals"].as_f64().unwrap() - 18.0).abs() < 0.02, "{parts}");
    // Run-coded: below the 7 bits per token of fixed-width codes for 128 centroids.
    let codes = parts["codes"].as_f64().unwrap();
    assert!(codes > 0.1 && codes < 7.0 / 8.0, "{parts}");
    assert!((parts["embeddings"].as_f64().unwrap() - 64.0).abs() < 0.01, "{parts}");
    let bits = info["ivf_bits_per_entry"].as_f64().unwrap();
    assert!(bits > 1.0 && bits < 12.0, "{bits}");
    let text = cli_ok(&["info", "--index", s(&idx)]);
    assert!(text.contains("centroids      128"), "{text}");
    for line in ["  residuals", "  codes", "  ivf", "  embeddings", "  per-document", "  fixed"] {
        assert!(text.contains(line), "{text}");
    }
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

/// `verify` refuses a norm factor that is not a positive finite number (behind a valid CRC),
/// naming `norms.f16` and the token; `open` refuses `token_norms` on an index whose tokens are
/// not unit-norm.
#[test]
fn verify_catches_bad_token_norms() {
    let dir = TempDir::new().unwrap();
    let idx = dir.path().join("idx");
    build(&idx, &corpus(60, 32, 5), CompressedParams::new(2));
    let rewrite = |c: Component, payload: &[u8]| {
        let mut w = FooterWriter::new(Vec::new(), c.id());
        w.write_all(payload).unwrap();
        fs::write(idx.join(c.file_name()), w.finish().unwrap().0).unwrap();
    };
    let norms_path = idx.join(Component::TokenNorms.file_name());
    let mut norms = fs::read(&norms_path).unwrap();
    norms.truncate(norms.len() - 32);
    Segment::open(&idx).unwrap().verify().unwrap();
    for bad in [half::f16::NAN, half::f16::ZERO, half::f16::INFINITY] {
        let mut broken = norms.clone();
        broken[6..8].copy_from_slice(&bad.to_le_bytes());
        rewrite(Component::TokenNorms, &broken);
        let err = Segment::open(&idx).unwrap().verify().unwrap_err().to_string();
        assert!(err.contains("norms.f16") && err.contains("token 3"), "{err}");
    }
    rewrite(Component::TokenNorms, &norms);
    let meta_path = idx.join(Component::Meta.file_name());
    let bytes = fs::read(&meta_path).unwrap();
    let mut meta: IndexMeta = serde_json::from_slice(&bytes[..bytes.len() - 32]).unwrap();
    meta.residual.as_mut().unwrap().unit_norm = false;
    rewrite(Component::Meta, &serde_json::to_vec_pretty(&meta).unwrap());
    let err = Segment::open(&idx).unwrap_err().to_string();
    assert!(err.contains("token norms need"), "{err}");
}

/// WARP mode over the same index: with every centroid probed and nothing rescored, a document's
/// WARP score is its table-scored MaxSim up to the i8 tables' rounding; at the defaults (16
/// probes, the best 64 rescored) it finds the oracle's top 10, and the same bits come back on one
/// thread and several.
/// A stored centroid-grouped layout (`CompressedParams::warp_layout`, format v7) holds exactly
/// what the in-memory one groups: WARP searches give the same bits from either, for unit-norm
/// tokens (stored f16 factors) and tokens that are not (no factors), at nbits 2 and 4; the stored
/// one verifies, and takes little memory.
#[test]
fn a_stored_warp_layout_answers_as_the_in_memory_one() {
    use engine::SearchMode;
    let dir = TempDir::new().unwrap();
    let c = corpus(700, 64, 23);
    let qs = queries(&c, 12, 16);
    for (nbits, scale) in [(2, 1.0f32), (4, 1.7)] {
        let dim = c.spec().dim;
        let mut all = c.generate_all();
        all.tokens.iter_mut().for_each(|v| *v *= scale);
        let make = |name: &str, warp_layout: bool| {
            let dest = dir.path().join(format!("{name}{nbits}"));
            let params = CompressedParams { warp_layout, ..CompressedParams::new(nbits) };
            let meta = build_tokens(&dest, dim, &all.tokens, &all.doclens, params);
            assert_eq!(meta.residual.unwrap().warp_layout, warp_layout);
            assert_eq!(meta.residual.unwrap().unit_norm, scale == 1.0);
            Segment::open(&dest).unwrap()
        };
        let (plain, stored) = (make("plain", false), make("stored", true));
        stored.verify().unwrap();
        assert!(plain.reader().warp_files().is_none());
        let files = stored.reader().warp_files().expect("stored layout");
        assert_eq!(files.norms.is_some(), scale == 1.0);
        let n_centroids = stored.meta().residual.unwrap().n_centroids as usize;
        let warp = SearchParams {
            mode: SearchMode::Warp,
            min_centroid_fit: f32::NEG_INFINITY,
            ..SearchParams::for_k(10)
        };
        for params in [
            warp.clone(),
            SearchParams { nprobe: Some(n_centroids), warp_rescore: Some(0), ..warp.clone() },
            SearchParams { nprobe: Some(3), warp_rescore: Some(0), ..warp.clone() },
        ] {
            let bits = |index: &Segment| {
                let got = index.search(&qs, &params).unwrap();
                got.iter()
                    .map(|h| h.iter().map(|x| (x.doc, x.score.to_bits())).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            };
            let (a, b) = (bits(&plain), bits(&stored));
            assert!(a.iter().all(|h| h.len() == 10));
            assert_eq!(a, b, "nbits {nbits}, scale {scale}, {params:?}");
        }
        // The default mode (auto) runs WARP mode where the layout is stored and k ≤ 10, PLAID
        // mode otherwise (WARP's own scores returned, so that the two modes' answers differ).
        let hits = |index: &Segment, params: &SearchParams| {
            let got = index.search(&qs, params).unwrap();
            got.iter()
                .map(|h| h.iter().map(|x| (x.doc, x.score.to_bits())).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        for k in [10, 11] {
            let auto = SearchParams {
                warp_rescore: Some(0),
                min_centroid_fit: f32::NEG_INFINITY,
                ..SearchParams::for_k(k)
            };
            assert_eq!(auto.mode, SearchMode::Auto);
            let mode = |mode| SearchParams { mode, ..auto.clone() };
            assert_eq!(hits(&plain, &auto), hits(&plain, &mode(SearchMode::Plaid)));
            let stored_mode =
                if k <= engine::search::AUTO_WARP_MAX_K { SearchMode::Warp } else { SearchMode::Plaid };
            assert_eq!(hits(&stored, &auto), hits(&stored, &mode(stored_mode)), "k {k}");
            assert_ne!(hits(&stored, &mode(SearchMode::Warp)), hits(&stored, &mode(SearchMode::Plaid)));
        }
        let (in_memory, mapped) = (
            plain.compressed().unwrap().prepare_warp().unwrap(),
            stored.compressed().unwrap().prepare_warp().unwrap(),
        );
        assert!(mapped * 4 < in_memory, "{mapped} bytes held for the stored layout, {in_memory} built");
    }
}

/// `verify` checks a stored layout against the codes, residuals and norms it was grouped from:
/// a change with a valid CRC is found and the file named; `open` still accepts what only verify
/// can see, and refuses counts that disagree with the token count or the slot arrays' lengths.
#[test]
fn verify_checks_the_stored_warp_layout_against_the_codes() {
    let dir = TempDir::new().unwrap();
    let c = corpus(300, 32, 5);
    let src = dir.path().join("src");
    build(&src, &c, CompressedParams { warp_layout: true, ..CompressedParams::new(2) });
    Segment::open(&src).unwrap().verify().unwrap();
    let positions = 32 * 2 / 8;
    let counts: Vec<u32> = payload(&src.join("warp_counts.u32"))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let first_block = |cell: usize| counts[..cell].iter().map(|&n| (n as usize).div_ceil(64)).sum::<usize>();
    let docs: Vec<u32> = payload(&src.join("warp_docs.u32"))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // A centroid whose first two tokens are of different documents, and one with padding.
    let cell = (0..counts.len())
        .find(|&c| counts[c] >= 2 && docs[first_block(c) * 64] != docs[first_block(c) * 64 + 1])
        .unwrap();
    let slot = first_block(cell) * 64;
    let padded = (0..counts.len()).find(|&c| !counts[c].is_multiple_of(64)).unwrap();
    let pad_slot = first_block(padded) * 64 + counts[padded] as usize;
    let damage = |name: &str, what: &dyn Fn(&mut Vec<u8>)| {
        let dest = copy_index(&src, &dir.path().join(name.replace('.', "_")));
        let component = Component::EVERY.into_iter().find(|c| c.file_name() == name).unwrap();
        let mut bytes = payload(&dest.join(name));
        what(&mut bytes);
        rewrite(&dest.join(name), component, &bytes);
        dest
    };
    let refused_by_verify = |dest: &Path, name: &str| {
        let index = Segment::open(dest).expect("open checks lengths only");
        let err = index.verify().unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    };
    // A residual byte of a real slot (byte position 1 of the slot); the documents of two slots
    // swapped; a padding slot's factor set.
    let d = damage("warp_codes.u8", &|b| b[slot * positions + 64] ^= 0x10);
    refused_by_verify(&d, "warp_codes.u8");
    let d = damage("warp_docs.u32", &|b| {
        let (x, y) = (slot * 4, (slot + 1) * 4);
        let first: [u8; 4] = b[x..x + 4].try_into().unwrap();
        b.copy_within(y..y + 4, x);
        b[y..y + 4].copy_from_slice(&first);
    });
    refused_by_verify(&d, "warp_docs.u32");
    let d = damage("warp_norms.f16", &|b| {
        b[pad_slot * 2..pad_slot * 2 + 2].copy_from_slice(&half::f16::ONE.to_le_bytes())
    });
    refused_by_verify(&d, "warp_norms.f16");
    // A token moved between two centroids: the sum holds, the slots do not.
    let d = damage("warp_counts.u32", &|b| {
        let (x, y) = (cell * 4, (cell + 1) * 4);
        let n = u32::from_le_bytes(b[x..x + 4].try_into().unwrap());
        let m = u32::from_le_bytes(b[y..y + 4].try_into().unwrap());
        b[x..x + 4].copy_from_slice(&(n - 1).to_le_bytes());
        b[y..y + 4].copy_from_slice(&(m + 1).to_le_bytes());
    });
    match Segment::open(&d) {
        Ok(index) => assert!(index.verify().unwrap_err().to_string().contains("warp_")),
        Err(e) => assert!(e.to_string().contains("warp_"), "{e}"),
    }
    // Counts that add up to another token count are refused at open.
    let d = damage("warp_counts.u32", &|b| b[cell * 4] = b[cell * 4].wrapping_add(1));
    let err = Segment::open(&d).unwrap_err().to_string();
    assert!(err.contains("warp_counts.u32") && err.contains("add up"), "{err}");
}

#[test]
fn warp_mode_agrees_with_the_oracle() {
    use engine::SearchMode;
    let dir = TempDir::new().unwrap();
    let c = corpus(1500, 64, 11);
    build(&dir.path().join("i"), &c, CompressedParams::new(2));
    let index = Segment::open(&dir.path().join("i")).unwrap();
    let qs = queries(&c, 30, 16);
    let oracle = index.search_decompressed(&qs, 10).unwrap();
    let warp = SearchParams {
        mode: SearchMode::Warp,
        min_centroid_fit: f32::NEG_INFINITY,
        ..SearchParams::for_k(10)
    };
    let got = index.search(&qs, &warp).unwrap();
    let r = recall(&got, &oracle);
    assert!(r >= 0.98, "WARP recall@10 against the oracle is {r}");
    for (g, o) in got.iter().zip(&oracle) {
        assert_eq!(g.len(), 10);
        assert!(g.windows(2).all(|w| w[0].score >= w[1].score));
        // Rescored hits carry the oracle's own scores.
        for h in g {
            if let Some(x) = o.iter().find(|x| x.doc == h.doc) {
                assert_eq!(x.score, h.score);
            }
        }
    }
    // Every centroid probed, WARP scores returned as they are.
    let n_centroids = index.meta().residual.as_ref().unwrap().n_centroids as usize;
    let full = SearchParams { nprobe: Some(n_centroids), warp_rescore: Some(0), ..warp.clone() };
    let raw = index.search(&qs, &full).unwrap();
    assert!(recall(&raw, &oracle) >= 0.95, "full-probe WARP recall {}", recall(&raw, &oracle));
    let mut compared = 0;
    for (g, o) in raw.iter().zip(&oracle) {
        for h in g {
            if let Some(x) = o.iter().find(|x| x.doc == h.doc) {
                // 16 query tokens, each within about 1e-3 of its table-scored maximum.
                assert!((x.score - h.score).abs() < 16.0 * 2e-3, "{} vs {}", x.score, h.score);
                compared += 1;
            }
        }
    }
    assert!(compared > 200, "{compared}");
    // Too few probes and no rescoring lose documents: the knob is live.
    let narrow = SearchParams { nprobe: Some(1), warp_rescore: Some(0), ..warp.clone() };
    assert!(recall(&index.search(&qs, &narrow).unwrap(), &oracle) < r);
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| qs.iter().map(|q| index.search_one(q, &warp, None).unwrap()).collect::<Vec<_>>())
    };
    let one = on(1);
    for (a, b) in one.iter().zip(&on(3)) {
        let bits = |h: &[engine::Hit]| h.iter().map(|x| (x.doc, x.score.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }
}
