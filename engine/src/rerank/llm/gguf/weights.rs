//! Dequantizing a GGUF's tensors to f32 at load time.
//!
//! candle's model families take a GGUF `Content` and a reader. To run one on f32 weights, every
//! tensor is dequantized once into an in-memory buffer and a `Content` describing that buffer
//! (same metadata, every tensor typed `F32`) is handed to the family's loader. candle turns `F32`
//! GGUF tensors into plain tensors, so every matrix product then runs as an f32 GEMM instead of a
//! quantized dot-product kernel: 4 to 8 times the memory of a 4-bit file, and (measured, see
//! `docs/LLM_RERANK.md`) much faster prompt processing on CPU.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek};

use candle_core::quantized::gguf_file::{Content, TensorInfo};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

/// Bytes the f32 copy of `content`'s tensors takes (saturating: the loader has checked that
/// every tensor lies within the file, so this is at most a few times the file's size).
pub fn f32_bytes(content: &Content) -> u64 {
    content
        .tensor_infos
        .values()
        .map(|t| (t.shape.elem_count() as u64).saturating_mul(4))
        .fold(0, u64::saturating_add)
}

/// `content` with every tensor dequantized to f32, and the buffer holding them.
pub fn dequantize_all<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
) -> candle_core::Result<(Content, Cursor<Vec<u8>>)> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut data = Vec::with_capacity(f32_bytes(content) as usize);
    let mut infos = HashMap::with_capacity(names.len());
    for name in names {
        let qt = content.tensor(reader, name, &Device::Cpu)?;
        let values: Vec<f32> = qt.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let offset = data.len() as u64;
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        infos.insert(
            name.clone(),
            TensorInfo { ggml_dtype: GgmlDType::F32, shape: qt.shape().clone(), offset },
        );
    }
    let f32_content = Content {
        magic: content.magic,
        metadata: content.metadata.clone(),
        tensor_infos: infos,
        tensor_data_offset: 0,
    };
    Ok((f32_content, Cursor::new(data)))
}
