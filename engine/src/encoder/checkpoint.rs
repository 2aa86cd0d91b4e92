//! A model's weights file, read one tensor at a time.
//!
//! A safetensors file is memory-mapped and only its header is parsed up front; each tensor is
//! viewed in place when a layer is built (an f32 tensor at an aligned offset is read without a
//! copy, other float types are converted), so loading a model never holds the file's bytes twice.
//! The map is dropped once the model is built: the packed layers own their values. A PyTorch
//! pickle (`pytorch_model.bin`) goes through candle's reader into memory.
//!
//! As with the index files, a weights file must not be rewritten in place while a model loads
//! from it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use index_format::Bytes;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use super::config::model_error;
use crate::error::{EngineError, Result};

/// Where a checkpoint's tensors come from.
enum Source {
    /// A mapped safetensors file: each tensor's type, shape and byte range in `bytes`.
    Mapped { bytes: Bytes, tensors: HashMap<String, TensorInfo>, data_start: usize },
    /// Tensors already in memory (a PyTorch pickle, or tests).
    Loaded(HashMap<String, Tensor>),
}

/// The tensors of one weights file, looked up by name.
pub(crate) struct Checkpoint {
    path: PathBuf,
    source: Source,
    /// CRC-32 of the file, when it was read whole (a pickle); a mapped file is hashed on demand.
    crc32: Option<u32>,
    /// Put before every name looked up when the tensor exists under it (`bert.`, `model.`): see
    /// [`Checkpoint::strip_prefix`].
    prefix: String,
}

impl Checkpoint {
    /// Opens a weights file: `*.safetensors` is mapped and its header checked, anything else is
    /// read as a PyTorch pickle (whose bytes are hashed while they are read; a mapped file is
    /// hashed only if [`Checkpoint::crc32`] is asked for, which the cross-encoder never does).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let io = |source| EngineError::Io { path: path.to_path_buf(), source };
        if path.extension().is_none_or(|e| e != "safetensors") {
            let crc32 = crc32fast::hash(&std::fs::read(path).map_err(io)?);
            let tensors = candle_core::pickle::read_all(path).map_err(|e| {
                model_error(
                    path,
                    format!(
                        "cannot read this PyTorch checkpoint ({e}); convert it to model.safetensors, e.g. with \
                         `safetensors.torch.save_file(torch.load(path), 'model.safetensors')`"
                    ),
                )
            })?;
            let mut checkpoint = Self::from_tensors(path, tensors.into_iter().collect());
            checkpoint.crc32 = Some(crc32);
            return Ok(checkpoint);
        }
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 8 {
            return Err(model_error(
                path,
                format!("not a readable safetensors file: {len} bytes, shorter than its header"),
            ));
        }
        let bytes = Bytes::from_mmap(index_format::bytes::map_file(&file).map_err(io)?);
        let (header, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| model_error(path, format!("not a readable safetensors file: {e}")))?;
        let tensors = metadata.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            crc32: None,
            source: Source::Mapped { bytes, tensors, data_start: 8 + header },
            prefix: String::new(),
        })
    }

    /// A checkpoint over tensors already in memory (named as `path` in errors).
    pub(crate) fn from_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Checkpoint {
            path: path.to_path_buf(),
            source: Source::Loaded(tensors),
            crc32: Some(0),
            prefix: String::new(),
        }
    }

    /// The file the tensors come from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// CRC-32 of the file's bytes (the weights' identity recorded in an index).
    pub(crate) fn crc32(&self) -> u32 {
        match (&self.source, self.crc32) {
            (_, Some(crc)) => crc,
            (Source::Mapped { bytes, .. }, None) => crc32fast::hash(bytes),
            (Source::Loaded(_), None) => 0,
        }
    }

    /// The stored name of `name`: under the prefix when it exists there.
    fn key<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if !self.prefix.is_empty() {
            let prefixed = format!("{}{name}", self.prefix);
            if self.has(&prefixed) {
                return Cow::Owned(prefixed);
            }
        }
        Cow::Borrowed(name)
    }

    fn has(&self, key: &str) -> bool {
        match &self.source {
            Source::Mapped { tensors, .. } => tensors.contains_key(key),
            Source::Loaded(tensors) => tensors.contains_key(key),
        }
    }

    /// Whether the checkpoint holds `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.has(&self.key(name))
    }

    /// The shape of `name`, `None` when it is absent.
    pub(crate) fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let key = self.key(name);
        match &self.source {
            Source::Mapped { tensors, .. } => tensors.get(key.as_ref()).map(|t| t.shape.clone()),
            Source::Loaded(tensors) => tensors.get(key.as_ref()).map(|t| t.dims().to_vec()),
        }
    }

    /// When the backbone's tensors sit under a prefix (`bert.` in HF_ColBERT checkpoints, the
    /// model type in `*ForMaskedLM` ones), the first of `prefixes` under which `probe` exists is
    /// put before every later lookup (names that exist only without it are still found). Nothing
    /// changes when `probe` exists as it is.
    pub(crate) fn strip_prefix(&mut self, probe: &str, prefixes: &[&str]) {
        self.prefix.clear();
        if self.has(probe) {
            return;
        }
        if let Some(p) = prefixes.iter().find(|p| self.has(&format!("{p}{probe}"))) {
            self.prefix = p.to_string();
        }
    }

    /// The values of `name` as f32, whatever float type they are stored in: borrowed from the
    /// file when it stores them as aligned f32, converted otherwise. `None` when it is absent.
    pub(crate) fn f32(&self, name: &str) -> Result<Option<Cow<'_, [f32]>>> {
        let key = self.key(name);
        match &self.source {
            Source::Loaded(tensors) => match tensors.get(key.as_ref()) {
                None => Ok(None),
                Some(t) => Ok(Some(Cow::Owned(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?))),
            },
            Source::Mapped { bytes, tensors, data_start } => {
                let Some(info) = tensors.get(key.as_ref()) else { return Ok(None) };
                let (a, b) = info.data_offsets;
                let raw = bytes.get(data_start + a..data_start + b).ok_or_else(|| {
                    model_error(&self.path, format!("tensor {name:?} lies past the end of the file"))
                })?;
                let values = match info.dtype {
                    Dtype::F32 => match index_format::bytes::cast_slice::<f32>(raw) {
                        Some(v) => Cow::Borrowed(v),
                        None => Cow::Owned(
                            raw.chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                .collect(),
                        ),
                    },
                    Dtype::F16 => Cow::Owned(
                        raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                    ),
                    Dtype::BF16 => Cow::Owned(
                        raw.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                    ),
                    Dtype::F64 => Cow::Owned(
                        raw.chunks_exact(8)
                            .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32)
                            .collect(),
                    ),
                    other => {
                        return Err(model_error(
                            &self.path,
                            format!(
                                "tensor {name:?} has dtype {other:?}; weights must be F32, F16, BF16 or F64"
                            ),
                        ))
                    }
                };
                Ok(Some(values))
            }
        }
    }

    /// `name` as an f32 candle tensor of its stored shape, `None` when it is absent.
    pub(crate) fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let (Some(shape), Some(values)) = (self.shape(name), self.f32(name)?) else { return Ok(None) };
        Ok(Some(Tensor::from_slice(&values, shape, &Device::Cpu)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())
            })
            .collect();
        let path = dir.join("model.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
        path
    }

    #[test]
    fn reads_every_float_type_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let want = [1.5f32, -2.25, 0.0, 3.0e-3];
        let f32b: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16b: Vec<u8> = want.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        let bf16b: Vec<u8> = want.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        let f64b: Vec<u8> = want.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect();
        let path = write(
            dir.path(),
            &[
                ("bert.a", Dtype::F32, vec![2, 2], f32b),
                ("bert.b", Dtype::F16, vec![4], f16b),
                ("c", Dtype::BF16, vec![4], bf16b),
                ("d", Dtype::F64, vec![1, 4], f64b),
                ("e", Dtype::I64, vec![1], vec![0; 8]),
            ],
        );
        let mut ck = Checkpoint::open(&path).unwrap();
        assert_eq!(ck.crc32(), crc32fast::hash(&std::fs::read(&path).unwrap()));
        assert_eq!(ck.shape("bert.a"), Some(vec![2, 2]));
        assert_eq!(ck.f32("a").unwrap(), None);
        ck.strip_prefix("a", &["model.", "bert."]);
        assert_eq!(ck.shape("a"), Some(vec![2, 2]));
        assert!(matches!(ck.f32("a").unwrap(), Some(Cow::Borrowed(_))), "aligned f32 is read in place");
        assert!(ck.contains("c") && !ck.contains("zz"));
        for name in ["a", "b", "c", "d"] {
            let got = ck.f32(name).unwrap().unwrap();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= w.abs() * 4e-3, "{name}: {g} vs {w}");
            }
        }
        assert_eq!(ck.tensor("d").unwrap().unwrap().dims(), [1, 4]);
        let err = ck.f32("e").unwrap_err().to_string();
        assert!(err.contains("\"e\"") && err.contains("I64"), "{err}");
    }

    #[test]
    fn reads_f32_at_an_unaligned_offset() {
        // A header padded with spaces to leave the data one byte past a 4-byte boundary (the
        // format allows any header length; writers usually pad to 8).
        let mut header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_vec();
        while (8 + header.len()) % 4 != 1 {
            header.push(b' ');
        }
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend([0.5f32, -7.0].iter().flat_map(|v| v.to_le_bytes()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, file).unwrap();
        let ck = Checkpoint::open(&path).unwrap();
        let values = ck.f32("a").unwrap().unwrap();
        assert!(matches!(values, Cow::Owned(_)), "an unaligned tensor must be copied");
        assert_eq!(&values[..], &[0.5, -7.0]);
    }

    #[test]
    fn bad_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, what) in [
            (&b"abc"[..], "shorter than its header"),
            (&[200u8, 0, 0, 0, 0, 0, 0, 0, b'{'][..], "safetensors"),
        ] {
            let path = dir.path().join("model.safetensors");
            std::fs::write(&path, bytes).unwrap();
            let err = Checkpoint::open(&path).err().unwrap().to_string();
            assert!(err.contains("model.safetensors") && err.contains(what), "{err}");
        }
        // A header promising more data than the file holds.
        let path = write(dir.path(), &[("a", Dtype::F32, vec![4], vec![0; 16])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = Checkpoint::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a readable safetensors file"), "{err}");
    }
}
