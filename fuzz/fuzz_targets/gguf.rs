//! GGUF model files (`search --llm gguf:FILE`): the input replaces or edits (first byte odd, see
//! [`colbert_index_fuzz::edited`]) a small GGUF with a llama architecture, a byte-level BPE
//! tokenizer, a ChatML template and one f32 tensor, and the model is loaded (header, tokenizer,
//! chat template, weights; bit 1 of the first byte asks for f32 weights, so every tensor is
//! dequantized).
#![no_main]

use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use colbert_index_fuzz::{edited, scratch_file};
use engine::rerank::llm::gguf::{GgufChat, GgufOptions, WeightMode};
use libfuzzer_sys::fuzz_target;

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
        let tokens = ["<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġa", "\u{10a}"];
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.context_length", Value::U32(64)),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&["a b", "Ġ a"])),
            ("tokenizer.ggml.token_type", Value::Array([3, 3, 1, 1, 1, 1, 1, 1].map(Value::I32).to_vec())),
            ("tokenizer.ggml.bos_token_id", Value::U32(0)),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            (
                "tokenizer.chat_template",
                Value::String("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into()),
            ),
        ];
        let t = Tensor::arange(0f32, 32.0, &Device::Cpu).unwrap().reshape((4, 8)).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &meta, &[("token_embd.weight", &q)]).unwrap();
        out.into_inner()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 1 { edited(template(), rest) } else { rest.to_vec() };
    let path = scratch_file("input.gguf", &bytes);
    let weights = if mode & 2 == 2 { WeightMode::F32 } else { WeightMode::Auto };
    let _ = GgufChat::load(&path, GgufOptions { weights });
});
