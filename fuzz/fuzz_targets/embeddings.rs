//! Safetensors embeddings files: the input (or, when its first byte is odd, a valid document
//! embeddings file edited by it, see [`colbert_index_fuzz::edited`]) is opened as document
//! embeddings (`build --embeddings`; every row converted) and as query embeddings
//! (`search --query-embeddings`).
#![no_main]

use std::sync::OnceLock;

use colbert_index_fuzz::{edited, scratch_file};
use engine::embeddings::{DocEmbeddingsFile, QueryEmbeddings};
use libfuzzer_sys::fuzz_target;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Documents of 3, 1 and 4 tokens of dimension 8 in f16, and a [2, 3, 8] f32 query tensor.
fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let emb: Vec<u8> = (0..64u16).flat_map(|i| (0x3000 + i * 7).to_le_bytes()).collect();
        let lens: Vec<u8> = [3i64, 1, 4].iter().flat_map(|x| x.to_le_bytes()).collect();
        let q: Vec<u8> = (0..48).flat_map(|i| (i as f32 / 48.0).to_le_bytes()).collect();
        let tensors = vec![
            ("embeddings", TensorView::new(Dtype::F16, vec![8, 8], &emb).unwrap()),
            ("doclens", TensorView::new(Dtype::I64, vec![3], &lens).unwrap()),
            ("queries", TensorView::new(Dtype::F32, vec![2, 3, 8], &q).unwrap()),
        ];
        safetensors::serialize(tensors, None).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 1 { edited(template(), rest) } else { rest.to_vec() };
    let path = scratch_file("input.safetensors", &bytes);
    if let Ok(file) = DocEmbeddingsFile::open(&path) {
        let (_, _) = (file.dim(), file.n_docs());
        let mut out = Vec::new();
        let rows = file.n_tokens().min(1 << 12);
        let _ = file.rows_f32(0..rows, &mut out);
        let _ = file.rows_f32(rows / 2..rows, &mut out);
    }
    let _ = QueryEmbeddings::open(&path);
});
