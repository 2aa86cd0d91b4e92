//! The on-disk format of a colbert-index index.
//!
//! An index is a directory of files, one per [`Component`]. Every file is a raw little-endian
//! payload followed by a fixed 32-byte [`footer`] (magic, format version, component id, payload
//! length, CRC32 of the payload). Payloads start at offset 0 of their file, so a memory-mapped
//! file can be viewed as a typed slice without copying or parsing.
//!
//! - [`IndexReader::open`] maps every file and checks what is cheap: footers, versions, lengths,
//!   and the consistency of the metadata with the array sizes.
//! - [`IndexReader::verify`] additionally recomputes every CRC32.
//! - [`IndexWriter`] builds an index in a temporary sibling directory and renames it into place on
//!   [`IndexWriter::commit`], so an error or a crash never leaves a half-written index behind.
//!
//! The byte layout is documented in `docs/FORMAT.md`.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bytes;
pub mod checksums;
pub mod component;
pub mod error;
pub mod footer;
pub mod fsx;
pub mod idhash;
pub mod manifest;
pub mod meta;
pub mod packed;
pub mod reader;
pub mod runs;
pub mod version;
pub mod warp;
pub mod writer;

pub use bytes::{Bytes, Plain};
pub use component::{Component, SizeClass};
pub use error::{FormatError, Result};
pub use fsx::WriteLock;
pub use manifest::{Manifest, SegmentEntry};
pub use meta::{IndexKind, IndexMeta, ResidualMeta};
pub use reader::{doc_range, Codes, IndexReader, Ivf, IvfCursor};
pub use version::{FormatVersion, FORMAT_VERSION, OLDEST_SUPPORTED_VERSION};
pub use warp::WarpFiles;
pub use writer::{remove_stale_siblings, ComponentWriter, IndexWriter};
