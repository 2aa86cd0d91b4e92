//! The compute kernels of colbert-index, and every line of its compute `unsafe`.
//!
//! - [`cpu`]: the CPU's features, detected once per process, and the kernel table a caller's
//!   [`cpu::KernelChoice`] and [`cpu::Precision`] select, from features alone (never by timing,
//!   so the same flags on the same CPU always produce the same bytes);
//! - [`maxsim`]: MaxSim scoring (AVX-512, AVX2, NEON, scalar oracle);
//! - [`ops`]: the general f32 product and the element-wise passes (bias and activations, layer
//!   norm, softmax, argmax, row combination);
//! - [`packed`], [`bf16`] (with [`bf16::amx`]): dense products against a packed right-hand
//!   side, in f32 (AVX-512 panels), bf16 (`vdpbf16ps`) and on AMX tiles;
//! - [`decode`]: decoding of residual-compressed tokens;
//! - [`lut`]: MaxSim of residual-compressed tokens through per-query lookup tables, without
//!   decompressing them (the exact scoring of compressed tokens);
//! - [`int8`] (with [`int8::amx`]): 8-bit products of many rows with a few query tokens (AMX
//!   tiles, AVX-512 VNNI), WARP mode's first look at every centroid;
//! - [`warp`]: table sums of centroid-grouped compressed tokens against one query token, with
//!   AVX-512 VBMI byte permutes (the kernel of the WARP search mode).
//!
//! Every SIMD path is tested against a portable one in this crate's tests.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bf16;
pub mod cpu;
pub mod decode;
mod detect;
pub mod int8;
pub mod lut;
pub mod maxsim;
pub mod ops;
pub mod packed;
pub mod prefetch;
pub mod select;
#[cfg(target_arch = "x86_64")]
mod tile;
pub mod warp;

pub use cpu::{Features, KernelChoice, Kernels, Precision};
