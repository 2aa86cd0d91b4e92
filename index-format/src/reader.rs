//! Opening (cheap checks) and verifying (every checksum) an index.
//!
//! Every size here is computed from file contents, so arithmetic is checked (the lint below
//! refuses an unchecked `+`, `-`, `*` or `/`): a corrupt count is an error, never a wrap.
#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;

use crate::bytes::{map_file, Bytes, Plain};
use crate::component::Component;
use crate::error::{FormatError, Result};
use crate::footer::Footer;
use crate::meta::{IndexKind, IndexMeta, ResidualMeta};
use crate::packed::{
    code_bits, packed_words, padding_is_zero, ListError, PackedCodes, RiceCursor, RiceLists, RiceShapeError,
};
use crate::runs::{DocCodes, RunsError, RunsShapeError};
use crate::version::{FormatVersion, FORMAT_VERSION, OLDEST_SUPPORTED_VERSION};

struct Mapped {
    payload: Bytes,
    footer: Footer,
}

/// A memory-mapped index. Opening maps every file and checks footers, versions and sizes; the
/// payloads are then used in place.
pub struct IndexReader {
    dir: PathBuf,
    meta: IndexMeta,
    files: BTreeMap<Component, Mapped>,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader").field("dir", &self.dir).field("meta", &self.meta).finish()
    }
}

/// Opens `path` for reading only if it is a regular file (symbolic links followed): opening a
/// FIFO blocks until a writer appears, and reading a device may never end.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let not_regular = |kind: &str| FormatError::corrupt(path, format!("not a regular file ({kind})"));
    let kind = |t: std::fs::FileType| if t.is_dir() { "a directory" } else { "a FIFO, socket or device" };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err(not_regular(kind(m.file_type()))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FormatError::Missing { path: path.to_path_buf() })
        }
        Err(e) => return Err(FormatError::io(path, e)),
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FormatError::Missing { path: path.to_path_buf() })
        }
        Err(e) => return Err(FormatError::io(path, e)),
    };
    // The path may have been replaced between the two calls: check what was opened.
    let meta = file.metadata().map_err(|e| FormatError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(kind(meta.file_type())));
    }
    Ok(file)
}

/// The tokens `offsets[doc]..offsets[doc + 1]` of document `doc`, if both offsets exist, do not
/// decrease and are at most `n_tokens`: the check every use of an offset array makes, since
/// opening an index checks only its first and last entries.
pub fn doc_range(offsets: &[u64], doc: usize, n_tokens: u64) -> Option<Range<usize>> {
    let start = *offsets.get(doc)?;
    let end = *offsets.get(doc.checked_add(1)?)?;
    if start > end || end > n_tokens {
        return None;
    }
    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

/// The first and last entries of an offset array (0 for an empty one, which the length checks
/// refuse first).
fn ends(offsets: &[u64]) -> (u64, u64) {
    (offsets.first().copied().unwrap_or(0), offsets.last().copied().unwrap_or(0))
}

/// `a × b`, or `None` when it does not fit a `u64`.
fn mul(a: impl TryInto<u64>, b: impl TryInto<u64>) -> Option<u64> {
    a.try_into().ok()?.checked_mul(b.try_into().ok()?)
}

fn map_component(dir: &Path, component: Component) -> Result<Mapped> {
    let path = dir.join(component.file_name());
    let file = open_regular(&path)?;
    let len = file.metadata().map_err(|e| FormatError::io(&path, e))?.len();
    if len == 0 {
        return Err(FormatError::Truncated { path, detail: "empty file".into() });
    }
    let bytes = Bytes::from_mmap(map_file(&file).map_err(|e| FormatError::io(&path, e))?);
    let (payload_len, footer) = {
        let (payload, footer) = Footer::split(&path, &bytes, component.id())?;
        (payload.len(), footer)
    };
    let payload = bytes.slice(0..payload_len).expect("payload is a prefix of the file");
    if !payload_len.is_multiple_of(component.element_size()) {
        return Err(FormatError::corrupt(
            &path,
            format!(
                "{payload_len} bytes is not a whole number of {}-byte elements",
                component.element_size()
            ),
        ));
    }
    Ok(Mapped { payload, footer })
}

/// The centroid id of every token: u16 or u32 (format v2), bit-packed (v3), or run-coded per
/// document with each document's tokens ordered by centroid (v4).
#[derive(Debug, Clone, Copy)]
pub enum Codes<'a> {
    /// `codes.u16` (v2, at most 65536 centroids).
    U16(&'a [u16]),
    /// `codes.u32` (v2, more than 65536 centroids).
    U32(&'a [u32]),
    /// `codes.packed` (v3).
    Packed(PackedCodes<'a>),
    /// `codes.rice` and `code_offsets.packed` (v4).
    Runs(DocCodes<'a>),
}

impl Codes<'_> {
    /// The file holding the codes: `codes.u16`, `codes.u32`, `codes.packed` or `codes.rice`.
    pub fn component(&self) -> Component {
        match self {
            Codes::U16(_) => Component::Codes16,
            Codes::U32(_) => Component::Codes32,
            Codes::Packed(_) => Component::CodesPacked,
            Codes::Runs(_) => Component::CodesRice,
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Codes::U16(c) => c.len(),
            Codes::U32(c) => c.len(),
            Codes::Packed(c) => c.len(),
            Codes::Runs(c) => c.n_tokens(),
        }
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The code of every token of document `doc`, which owns tokens `tokens`, in stored order,
    /// into `out` (cleared first). Only run-coded codes can fail to decode; a code that is not a
    /// centroid is the caller's to check for the fixed-width kinds.
    #[inline]
    pub fn doc_tokens_into(
        &self,
        doc: usize,
        tokens: Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<(), RunsError> {
        match self {
            Codes::Runs(c) => c.tokens_into(doc, tokens.len(), out),
            _ => {
                out.clear();
                out.resize(tokens.len(), 0);
                self.fixed_into(tokens, out);
                Ok(())
            }
        }
    }

    /// The bytes holding document `doc`'s run-coded codes, for a caller that loads them ahead of
    /// [`Codes::doc_tokens_into`]; empty for the fixed-width kinds (and for corrupt offsets).
    pub fn doc_bytes(&self, doc: usize) -> &[u8] {
        match self {
            Codes::Runs(c) => c.doc_bytes(doc),
            _ => &[],
        }
    }

    /// The bytes holding document `doc`'s offset into the run-coded codes, for a caller that
    /// loads them ahead of [`Codes::doc_bytes`]; empty for the fixed-width kinds.
    pub fn doc_offset_bytes(&self, doc: usize) -> &[u8] {
        match self {
            Codes::Runs(c) => c.doc_offset_bytes(doc),
            _ => &[],
        }
    }

    /// The centroids of document `doc`'s tokens (it owns tokens `tokens`), each at least once,
    /// into `out` (cleared first): for run-coded codes each distinct centroid once, increasing;
    /// for the fixed-width kinds every token's code. What candidate scoring needs: a document's
    /// centroid scores depend only on the set of its centroids.
    #[inline]
    pub fn doc_centroids_into(
        &self,
        doc: usize,
        tokens: Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<(), RunsError> {
        match self {
            Codes::Runs(c) => c.distinct_into(doc, tokens.len(), out),
            _ => self.doc_tokens_into(doc, tokens, out),
        }
    }

    /// Fixed-width codes of tokens `tokens` into `out` (of `tokens.len()` codes).
    #[inline]
    fn fixed_into(&self, tokens: Range<usize>, out: &mut [u32]) {
        match self {
            Codes::Packed(c) => c.decode_into(tokens.start, out),
            Codes::U16(c) => out.iter_mut().zip(&c[tokens]).for_each(|(o, &v)| *o = v as u32),
            Codes::U32(c) => out.copy_from_slice(&c[tokens]),
            Codes::Runs(_) => unreachable!("run-coded codes are read per document"),
        }
    }
}

/// The inverted file: for each centroid, the strictly increasing documents that have a token
/// assigned to it. Plain u32 lists (format v2) or Rice-coded (v3).
#[derive(Debug, Clone, Copy)]
pub enum Ivf<'a> {
    /// `ivf_offsets.u64` and `ivf.u32` (v2).
    Plain {
        /// `C + 1` offsets into `docs`.
        offsets: &'a [u64],
        /// The lists, one after the other.
        docs: &'a [u32],
    },
    /// `ivf_bit_offsets.u64`, `ivf_rice_k.u8` and `ivf.rice` (v3).
    Rice(RiceLists<'a>),
}

/// A position inside one list of an [`Ivf`], to read it one document at a time.
#[derive(Debug, Clone, Copy)]
pub enum IvfCursor {
    /// Next and end index into a plain list.
    Plain(usize, usize),
    /// Inside a Rice-coded list.
    Rice(RiceCursor),
}

impl Ivf<'_> {
    /// The file holding the documents: `ivf.u32` or `ivf.rice`.
    pub fn component(&self) -> Component {
        match self {
            Ivf::Plain { .. } => Component::IvfDocs,
            Ivf::Rice(_) => Component::IvfRice,
        }
    }

    /// Number of lists (centroids).
    pub fn n_lists(&self) -> usize {
        match self {
            Ivf::Plain { offsets, .. } => offsets.len().saturating_sub(1),
            Ivf::Rice(r) => r.n_lists(),
        }
    }

    /// Appends the documents of centroid `c`'s list to `out` (on error, possibly part of it).
    #[inline]
    pub fn append_list(&self, c: usize, out: &mut Vec<u32>) -> Result<(), ListError> {
        match self {
            Ivf::Plain { offsets, docs } => {
                // (Checked at open: the offsets do not decrease and end at the list's length.)
                let list = doc_range(offsets, c, docs.len() as u64).ok_or(ListError::Overrun)?;
                out.extend_from_slice(&docs[list]);
                Ok(())
            }
            Ivf::Rice(r) => r.decode_into(c, out),
        }
    }

    /// Number of entries over all lists (a Rice-coded IVF is decoded to count them).
    pub fn count_entries(&self) -> Result<u64, ListError> {
        match self {
            Ivf::Plain { docs, .. } => Ok(docs.len() as u64),
            Ivf::Rice(r) => {
                let mut buf = Vec::new();
                let mut n = 0u64;
                for c in 0..r.n_lists() {
                    buf.clear();
                    r.decode_into(c, &mut buf)?;
                    n = n.saturating_add(buf.len() as u64);
                }
                Ok(n)
            }
        }
    }

    /// A cursor at the start of centroid `c`'s list.
    pub fn cursor(&self, c: usize) -> IvfCursor {
        match self {
            Ivf::Plain { offsets, docs } => {
                let list = doc_range(offsets, c, docs.len() as u64).unwrap_or(0..0);
                IvfCursor::Plain(list.start, list.end)
            }
            Ivf::Rice(r) => IvfCursor::Rice(r.cursor(c)),
        }
    }

    /// The next document of the cursor's list, `None` at its end.
    pub fn advance(&self, cur: &mut IvfCursor) -> Option<Result<u32, ListError>> {
        match (self, cur) {
            (Ivf::Plain { docs, .. }, IvfCursor::Plain(i, end)) => (*i < *end).then(|| {
                let d = docs[*i];
                *i = i.saturating_add(1);
                Ok(d)
            }),
            (Ivf::Rice(r), IvfCursor::Rice(c)) => r.advance(c),
            _ => panic!("a cursor of another inverted file"),
        }
    }
}

/// Checks the metadata alone: kind and residual parameters agree, nbits and dimension are valid.
fn check_meta(path: &Path, meta: &IndexMeta) -> Result<()> {
    match (meta.kind, meta.residual) {
        (IndexKind::Uncompressed, None) => Ok(()),
        (IndexKind::Uncompressed, Some(_)) => {
            Err(FormatError::corrupt(path, "residual parameters on an uncompressed index"))
        }
        (IndexKind::Residual { .. }, None) => {
            Err(FormatError::corrupt(path, "residual index without its `residual` parameters"))
        }
        (IndexKind::Residual { nbits }, Some(r)) => {
            if meta.format_version < 2 {
                return Err(FormatError::corrupt(path, "the residual kind needs format version 2"));
            }
            if !matches!(nbits, 1 | 2 | 4) {
                return Err(FormatError::corrupt(path, format!("nbits {nbits} is not 1, 2 or 4")));
            }
            if !meta.dim.is_multiple_of(8) {
                return Err(FormatError::corrupt(
                    path,
                    format!("dimension {} is not a multiple of 8", meta.dim),
                ));
            }
            if r.n_centroids == 0 || r.n_centroids > u32::MAX as u64 {
                return Err(FormatError::corrupt(path, format!("{} centroids", r.n_centroids)));
            }
            if r.token_norms && (meta.format_version < 6 || !r.unit_norm) {
                return Err(FormatError::corrupt(
                    path,
                    "token norms need format version 6 and unit-norm tokens",
                ));
            }
            if r.warp_layout && meta.format_version < 7 {
                return Err(FormatError::corrupt(path, "a centroid-grouped layout needs format version 7"));
            }
            Ok(())
        }
    }
}

impl IndexReader {
    /// Opens the index in `dir`, checking footers, versions and that the array sizes agree with
    /// the metadata. Does not read the payloads (see [`IndexReader::verify`]).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(if dir.exists() {
                FormatError::corrupt(dir, "not a directory")
            } else {
                FormatError::Missing { path: dir.to_path_buf() }
            });
        }
        let meta_file = map_component(dir, Component::Meta)?;
        let meta_path = dir.join(Component::Meta.file_name());
        meta_file.footer.check_crc(&meta_path, &meta_file.payload)?;
        let meta: IndexMeta = serde_json::from_slice(&meta_file.payload)
            .map_err(|e| FormatError::corrupt(&meta_path, format!("invalid metadata: {e}")))?;
        if FormatVersion::from_u32(meta.format_version).is_none() {
            return Err(FormatError::UnsupportedVersion {
                path: meta_path,
                found: meta.format_version,
                oldest: OLDEST_SUPPORTED_VERSION,
                newest: FORMAT_VERSION,
            });
        }
        check_meta(&meta_path, &meta)?;
        let mut files = BTreeMap::new();
        files.insert(Component::Meta, meta_file);
        for c in Self::components_of(&meta) {
            if c != Component::Meta {
                files.insert(c, map_component(dir, c)?);
            }
        }
        // A compressed index reads its residuals and exact f16 tier a few documents at a time
        // (PLAID's last stage, rerank by id), its ids by document, and its stored WARP layout a
        // few centroids at a time: no read-ahead there.
        // The uncompressed kind scans its embeddings whole and keeps the kernel's read-ahead.
        if meta.kind != IndexKind::Uncompressed {
            for c in [
                Component::Residuals,
                Component::Embeddings,
                Component::DocIdBytes,
                Component::WarpCodes,
                Component::WarpDocs,
                Component::WarpNorms,
            ] {
                if let Some(m) = files.get(&c) {
                    m.payload.advise_random();
                }
            }
        }
        let reader = Self { dir: dir.to_path_buf(), meta, files };
        reader.check_shapes()?;
        Ok(reader)
    }

    /// The components an index with metadata `meta` consists of: the five files of the
    /// uncompressed kind, or for the residual kind its centroids, buckets, codes, residuals, IVF,
    /// document offsets and ids, plus `embeddings.f16` when it was kept. The codes and IVF files
    /// depend on the version: u16 or u32 codes (by the centroid count) and a plain IVF in v2,
    /// packed codes and a Rice-coded IVF from v3.
    pub fn components_of(meta: &IndexMeta) -> Vec<Component> {
        let mut v = Self::kind_components(meta);
        if meta.format_version >= 5 {
            v.push(Component::DocIdHash);
        }
        v
    }

    fn kind_components(meta: &IndexMeta) -> Vec<Component> {
        match (meta.kind, meta.residual) {
            (IndexKind::Residual { .. }, Some(r)) => {
                let mut v = vec![
                    Component::Meta,
                    Component::DocOffsets,
                    Component::DocIdOffsets,
                    Component::DocIdBytes,
                    Component::Centroids,
                    Component::Buckets,
                    Component::Residuals,
                ];
                if meta.format_version >= 4 {
                    v.extend([
                        Component::CodesRice,
                        Component::CodeOffsets,
                        Component::IvfBitOffsets,
                        Component::IvfRiceK,
                        Component::IvfRice,
                    ]);
                } else if meta.format_version == 3 {
                    v.extend([
                        Component::CodesPacked,
                        Component::IvfBitOffsets,
                        Component::IvfRiceK,
                        Component::IvfRice,
                    ]);
                } else {
                    v.extend([
                        Component::codes_for(r.n_centroids),
                        Component::IvfOffsets,
                        Component::IvfDocs,
                    ]);
                }
                if r.has_embeddings {
                    v.push(Component::Embeddings);
                }
                if r.token_norms {
                    v.push(Component::TokenNorms);
                }
                if r.warp_layout {
                    v.extend([Component::WarpCounts, Component::WarpCodes, Component::WarpDocs]);
                    if r.token_norms {
                        v.push(Component::WarpNorms);
                    }
                }
                v
            }
            _ => Component::ALL.to_vec(),
        }
    }

    fn path(&self, c: Component) -> PathBuf {
        self.dir.join(c.file_name())
    }

    fn typed<T: Plain>(&self, c: Component) -> Result<&[T]> {
        let m = &self.files[&c];
        m.payload.typed::<T>().ok_or_else(|| FormatError::corrupt(self.path(c), "payload is misaligned"))
    }

    /// A size computed from the metadata, or the error naming `meta.json` when it overflows.
    fn size(&self, size: Option<u64>, what: &str) -> Result<u64> {
        size.ok_or_else(|| {
            FormatError::corrupt(
                self.path(Component::Meta),
                format!("{what} overflows 64 bits (dim {}, {} tokens)", self.meta.dim, self.meta.n_tokens),
            )
        })
    }

    fn check_len(&self, c: Component, got: usize, expected: u64) -> Result<()> {
        if got as u64 != expected {
            return Err(FormatError::corrupt(
                self.path(c),
                format!("holds {got} elements, the metadata implies {expected}"),
            ));
        }
        Ok(())
    }

    fn check_shapes(&self) -> Result<()> {
        let m = &self.meta;
        let meta_path = self.path(Component::Meta);
        if m.dim == 0 {
            return Err(FormatError::corrupt(meta_path, "dimension is 0"));
        }
        let n_offsets = m.n_docs.checked_add(1).ok_or_else(|| {
            FormatError::corrupt(&meta_path, format!("{} documents is more than can be stored", m.n_docs))
        })?;
        let offsets = self.typed::<u64>(Component::DocOffsets)?;
        self.check_len(Component::DocOffsets, offsets.len(), n_offsets)?;
        let (first, last) = ends(offsets);
        if first != 0 || last != m.n_tokens {
            return Err(FormatError::corrupt(
                self.path(Component::DocOffsets),
                format!("offsets run from {first} to {last}, expected 0 to {}", m.n_tokens),
            ));
        }
        if self.files.contains_key(&Component::Embeddings) {
            let emb = self.typed::<f16>(Component::Embeddings)?;
            let want = self.size(mul(m.n_tokens, m.dim), "n_tokens × dim")?;
            self.check_len(Component::Embeddings, emb.len(), want)?;
        }
        if let Some(r) = m.residual {
            self.check_residual_shapes(&r)?;
        }
        if self.files.contains_key(&Component::TokenNorms) {
            let norms = self.typed::<f16>(Component::TokenNorms)?;
            self.check_len(Component::TokenNorms, norms.len(), m.n_tokens)?;
        }
        if self.files.contains_key(&Component::WarpCounts) {
            self.warp_starts()?;
        }
        let id_offsets = self.typed::<u64>(Component::DocIdOffsets)?;
        self.check_len(Component::DocIdOffsets, id_offsets.len(), n_offsets)?;
        let id_bytes = self.files[&Component::DocIdBytes].payload.len() as u64;
        let (first, last) = ends(id_offsets);
        if first != 0 || last != id_bytes {
            return Err(FormatError::corrupt(
                self.path(Component::DocIdOffsets),
                format!("id offsets run from {first} to {last}, the id file holds {id_bytes} bytes"),
            ));
        }
        if let Some(slots) = self.doc_id_table() {
            let n_docs = usize::try_from(m.n_docs).ok();
            if n_docs.and_then(crate::idhash::table_len) != Some(slots.len()) {
                return Err(FormatError::corrupt(
                    self.path(Component::DocIdHash),
                    format!(
                        "{} slots, {} documents need {:?}",
                        slots.len(),
                        m.n_docs,
                        n_docs.and_then(crate::idhash::table_len)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the centroid-grouped layout's lengths (its counts against the centroid and token
    /// counts, every slot array against the slots they imply) and returns each centroid's first
    /// block ([`crate::warp::block_starts`]).
    fn warp_starts(&self) -> Result<Vec<u32>> {
        let m = &self.meta;
        let c = m.residual.map_or(0, |r| r.n_centroids);
        let counts = self.typed::<u32>(Component::WarpCounts)?;
        self.check_len(Component::WarpCounts, counts.len(), c)?;
        let total = counts.iter().try_fold(0u64, |sum, &n| sum.checked_add(u64::from(n)));
        if total != Some(m.n_tokens) {
            return Err(FormatError::corrupt(
                self.path(Component::WarpCounts),
                format!("counts add up to {total:?} tokens, the metadata says {}", m.n_tokens),
            ));
        }
        let starts = crate::warp::block_starts(counts).ok_or_else(|| {
            FormatError::corrupt(self.path(Component::WarpCounts), "more blocks than can be addressed")
        })?;
        let slots = mul(u64::from(*starts.last().expect("C + 1 entries")), crate::warp::BLOCK);
        let slots = self.size(slots, "the layout's slots")?;
        let row = mul(m.dim, m.kind.nbits()).and_then(|b| b.checked_div(8));
        let bytes = self.size(row.and_then(|row| mul(slots, row)), "the layout's bytes")?;
        self.check_len(Component::WarpCodes, self.typed::<u8>(Component::WarpCodes)?.len(), bytes)?;
        self.check_len(Component::WarpDocs, self.typed::<u32>(Component::WarpDocs)?.len(), slots)?;
        if self.files.contains_key(&Component::WarpNorms) {
            self.check_len(Component::WarpNorms, self.typed::<f16>(Component::WarpNorms)?.len(), slots)?;
        }
        Ok(starts)
    }

    /// The centroid-grouped copy of the tokens (v7, [`ResidualMeta::warp_layout`]), its lengths
    /// checked at open.
    pub fn warp_files(&self) -> Option<crate::warp::WarpFiles<'_>> {
        let typed = |c: Component| self.files.get(&c).map(|m| &m.payload);
        Some(crate::warp::WarpFiles {
            counts: typed(Component::WarpCounts)?.typed::<u32>()?,
            codes: typed(Component::WarpCodes)?.typed::<u8>()?,
            docs: typed(Component::WarpDocs)?.typed::<u32>()?,
            norms: typed(Component::WarpNorms).and_then(|b| b.typed::<f16>()),
        })
    }

    /// The id lookup table (`doc_ids.hash`, v5 and later; see [`crate::idhash`]), checked at open
    /// to have the length its document count implies.
    pub fn doc_id_table(&self) -> Option<&[u32]> {
        self.files.get(&Component::DocIdHash).and_then(|m| m.payload.typed::<u32>())
    }

    /// The id bytes of document `doc`, `None` past the last document or for corrupt offsets.
    pub fn doc_id_bytes(&self, doc: usize) -> Option<&[u8]> {
        let o = self.typed::<u64>(Component::DocIdOffsets).ok()?;
        let bytes = &self.files[&Component::DocIdBytes].payload;
        let (a, b) = (*o.get(doc)?, *o.get(doc.checked_add(1)?)?);
        let (a, b) = (usize::try_from(a).ok()?, usize::try_from(b).ok()?);
        bytes.get(a..b)
    }

    /// The document whose external id is `id`, through the id table where the index has one
    /// (v5), else `None` (see [`crate::idhash::build`] to make one in memory).
    pub fn find_doc(&self, id: &str) -> Option<u32> {
        crate::idhash::lookup(self.doc_id_table()?, id.as_bytes(), |d| self.doc_id_bytes(d as usize))
    }

    /// Checks that the id table finds every document and holds nothing else.
    fn verify_id_table(&self) -> Result<()> {
        let Some(slots) = self.doc_id_table() else { return Ok(()) };
        let path = self.path(Component::DocIdHash);
        let n_docs = self.meta.n_docs;
        let filled = slots.iter().filter(|&&s| s != crate::idhash::EMPTY).count() as u64;
        if filled != n_docs {
            return Err(FormatError::corrupt(path, format!("{filled} filled slots for {n_docs} documents")));
        }
        for doc in 0..n_docs as usize {
            let id = self.doc_id_bytes(doc).unwrap_or_default();
            let found = crate::idhash::lookup(slots, id, |d| self.doc_id_bytes(d as usize));
            if found != Some(doc as u32) {
                return Err(FormatError::corrupt(
                    path,
                    format!("document {doc} is not found under its id (found {found:?})"),
                ));
            }
        }
        Ok(())
    }

    /// Recomputes every file's CRC32 and checks every offset array in full.
    pub fn verify(&self) -> Result<()> {
        let mut components: Vec<_> = self.files.keys().copied().collect();
        components.sort_by_key(|c| c.id());
        for c in components {
            let m = &self.files[&c];
            m.footer.check_crc(&self.path(c), &m.payload)?;
        }
        for (c, bound) in [
            (Component::DocOffsets, self.meta.n_tokens),
            (Component::DocIdOffsets, self.files[&Component::DocIdBytes].payload.len() as u64),
        ] {
            let offsets = self.typed::<u64>(c)?;
            if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1] || w[1] > bound) {
                return Err(FormatError::corrupt(
                    self.path(c),
                    format!("offsets decrease or overflow at document {i}"),
                ));
            }
        }
        if let Some(i) = self.doc_offsets().windows(2).position(|w| w[0] == w[1]) {
            return Err(FormatError::corrupt(
                self.path(Component::DocOffsets),
                format!("document {i} has no tokens"),
            ));
        }
        if let Err(e) = std::str::from_utf8(&self.files[&Component::DocIdBytes].payload) {
            return Err(FormatError::corrupt(
                self.path(Component::DocIdBytes),
                format!("invalid UTF-8: {e}"),
            ));
        }
        self.verify_id_table()?;
        if let Some(r) = self.meta.residual {
            self.verify_residual(&r)?;
        }
        Ok(())
    }

    fn check_residual_shapes(&self, r: &ResidualMeta) -> Result<()> {
        let m = &self.meta;
        let nbits = m.kind.nbits();
        let c = r.n_centroids;
        let centroids = self.typed::<f16>(Component::Centroids)?;
        self.check_len(Component::Centroids, centroids.len(), self.size(mul(c, m.dim), "C × dim")?)?;
        let n_buckets =
            r.checked_bucket_counts(nbits, m.dim).and_then(|(nc, nw)| mul(nc.checked_add(nw)?, 1));
        let buckets = self.typed::<f32>(Component::Buckets)?;
        self.check_len(Component::Buckets, buckets.len(), self.size(n_buckets, "the bucket count")?)?;
        let residuals = self.typed::<u8>(Component::Residuals)?;
        // (dim is a multiple of 8, checked with the metadata.)
        let row = mul(m.dim, nbits).and_then(|b| b.checked_div(8));
        let want = self.size(row.and_then(|row| mul(m.n_tokens, row)), "n_tokens × dim · nbits / 8")?;
        self.check_len(Component::Residuals, residuals.len(), want)?;
        if self.files.contains_key(&Component::CodesPacked) {
            self.packed_codes()?;
            self.rice_lists()?;
            return Ok(());
        }
        if self.files.contains_key(&Component::CodesRice) {
            self.doc_codes()?;
            self.rice_lists()?;
            return Ok(());
        }
        let codes = self.codes().expect("residual kind");
        self.check_len(Component::codes_for(c), codes.len(), m.n_tokens)?;
        let ivf_offsets = self.typed::<u64>(Component::IvfOffsets)?;
        self.check_len(Component::IvfOffsets, ivf_offsets.len(), self.size(c.checked_add(1), "C + 1")?)?;
        let ivf_len = self.typed::<u32>(Component::IvfDocs)?.len() as u64;
        let (first, last) = ends(ivf_offsets);
        if first != 0 || last != ivf_len {
            return Err(FormatError::corrupt(
                self.path(Component::IvfOffsets),
                format!(
                    "IVF offsets run from {first} to {last}, expected 0 to {ivf_len} (the size of {})",
                    Component::IvfDocs.file_name()
                ),
            ));
        }
        if let Some(i) = ivf_offsets.windows(2).position(|w| w[0] > w[1]) {
            return Err(FormatError::corrupt(
                self.path(Component::IvfOffsets),
                format!("IVF offsets decrease at centroid {i}"),
            ));
        }
        Ok(())
    }

    /// The v3 codes, checking the payload size against the token count and code width.
    fn packed_codes(&self) -> Result<PackedCodes<'_>> {
        let m = &self.meta;
        let c = m.residual.map_or(1, |r| r.n_centroids);
        let bits = code_bits(c);
        let payload = &self.files[&Component::CodesPacked].payload;
        let n_tokens = usize::try_from(m.n_tokens).ok();
        n_tokens.and_then(|n| PackedCodes::new(payload, bits, n)).ok_or_else(|| {
            FormatError::corrupt(
                self.path(Component::CodesPacked),
                format!(
                    "holds {} bytes, {} tokens at {bits} bits per code ({c} centroids) need {} \
                     (with the padding word)",
                    payload.len(),
                    m.n_tokens,
                    mul(m.n_tokens, bits).map_or(u64::MAX, |b| packed_words(b).saturating_mul(8)),
                ),
            )
        })
    }

    /// The v4 run-coded codes, checking the sizes of their two files and their first and last
    /// offsets.
    fn doc_codes(&self) -> Result<DocCodes<'_>> {
        let m = &self.meta;
        let c = m.residual.map_or(1, |r| r.n_centroids);
        let bytes = &self.files[&Component::CodesRice].payload;
        let offsets = &self.files[&Component::CodeOffsets].payload;
        let too_many = || FormatError::corrupt(self.path(Component::Meta), "too many documents or tokens");
        let n_docs = usize::try_from(m.n_docs).map_err(|_| too_many())?;
        let n_tokens = usize::try_from(m.n_tokens).map_err(|_| too_many())?;
        DocCodes::new(bytes, offsets, n_docs, n_tokens, c).map_err(|e| match e {
            RunsShapeError::OffsetsLength { bytes, expected } => FormatError::corrupt(
                self.path(Component::CodeOffsets),
                format!(
                    "holds {bytes} bytes, {} documents need {expected} (with the padding word) for {} \
                     of its size",
                    m.n_docs,
                    Component::CodesRice.file_name()
                ),
            ),
            RunsShapeError::Ends { first, last, stream_bytes } => FormatError::corrupt(
                self.path(Component::CodeOffsets),
                format!(
                    "offsets run from bit {first} to bit {last}, expected 0 to the end of {} \
                     ({stream_bytes} bytes with the padding word)",
                    Component::CodesRice.file_name()
                ),
            ),
        })
    }

    /// The v3 inverted file, checking its three arrays against each other and the metadata
    /// (cheap: `C` entries), so that decoding a list never reads out of bounds.
    fn rice_lists(&self) -> Result<RiceLists<'_>> {
        let c = self.meta.residual.map_or(1, |r| r.n_centroids);
        let offsets = self.typed::<u64>(Component::IvfBitOffsets)?;
        self.check_len(Component::IvfBitOffsets, offsets.len(), self.size(c.checked_add(1), "C + 1")?)?;
        let params = self.typed::<u8>(Component::IvfRiceK)?;
        self.check_len(Component::IvfRiceK, params.len(), c)?;
        let bytes = &self.files[&Component::IvfRice].payload;
        RiceLists::new(offsets, params, bytes).map_err(|e| match e {
            RiceShapeError::Counts { .. } => unreachable!("lengths checked above"),
            RiceShapeError::Offsets(i) => FormatError::corrupt(
                self.path(Component::IvfBitOffsets),
                format!("bit offsets do not start at 0 or decrease at centroid {i}"),
            ),
            RiceShapeError::Length { bytes, bits } if bits > bytes.saturating_mul(8) => FormatError::corrupt(
                self.path(Component::IvfBitOffsets),
                format!(
                    "the last list ends at bit {bits}, past the end of {} ({bytes} bytes)",
                    Component::IvfRice.file_name()
                ),
            ),
            RiceShapeError::Length { bytes, bits } => FormatError::corrupt(
                self.path(Component::IvfRice),
                format!(
                    "holds {bytes} bytes, but the lists end at bit {bits} ({}), which needs {} bytes \
                     with the padding word",
                    Component::IvfBitOffsets.file_name(),
                    packed_words(bits).saturating_mul(8)
                ),
            ),
            RiceShapeError::Param(i, k) => FormatError::corrupt(
                self.path(Component::IvfRiceK),
                format!("centroid {i} has Rice parameter {k}, above the maximum of 32"),
            ),
        })
    }

    fn verify_residual(&self, r: &ResidualMeta) -> Result<()> {
        let m = &self.meta;
        let c = r.n_centroids;
        if let Some(i) = self.centroids().unwrap_or_default().iter().position(|v| !v.is_finite()) {
            return Err(FormatError::corrupt(
                self.path(Component::Centroids),
                format!("non-finite value in centroid {}", i.checked_div(m.dim).unwrap_or(0)),
            ));
        }
        if let Some(i) =
            self.token_norms().unwrap_or_default().iter().position(|v| !(v.to_f32() > 0.0 && v.is_finite()))
        {
            return Err(FormatError::corrupt(
                self.path(Component::TokenNorms),
                format!("the norm factor of token {i} is not a positive finite number"),
            ));
        }
        let (cutoffs, weights) = self.buckets().expect("residual kind");
        if cutoffs.iter().chain(weights).any(|v| !v.is_finite()) {
            return Err(FormatError::corrupt(self.path(Component::Buckets), "non-finite bucket parameter"));
        }
        let per = (1usize << m.kind.nbits()).saturating_sub(1);
        if cutoffs.chunks_exact(per).any(|c| c.windows(2).any(|w| w[0] > w[1])) {
            return Err(FormatError::corrupt(self.path(Component::Buckets), "bucket cutoffs are not sorted"));
        }
        let codes = self.codes().expect("residual kind");
        let codes_path = self.path(codes.component());
        let n_docs = self.doc_offsets().len().saturating_sub(1);
        let mut seen: Vec<u32> = Vec::new();
        for doc in 0..n_docs {
            let tokens = self.doc_tokens(doc)?;
            let first = tokens.start;
            if let Err(e) = codes.doc_tokens_into(doc, tokens, &mut seen) {
                return Err(FormatError::corrupt(codes_path, format!("document {doc} does not decode: {e}")));
            }
            if let Some(i) = seen.iter().position(|&v| v as u64 >= c) {
                return Err(FormatError::corrupt(
                    codes_path,
                    format!(
                        "token {} has code {}, but there are {c} centroids",
                        first.saturating_add(i),
                        seen[i]
                    ),
                ));
            }
        }
        match codes {
            Codes::Packed(p) if !padding_is_zero(p.bytes(), mul(p.len(), p.bits()).unwrap_or(u64::MAX)) => {
                return Err(FormatError::corrupt(codes_path, "nonzero bits after the last code"));
            }
            Codes::Runs(r) => {
                if !padding_is_zero(r.bytes(), r.total_bits()) {
                    return Err(FormatError::corrupt(codes_path, "nonzero bits after the last document"));
                }
                let used = m.n_docs.checked_add(1).and_then(|n| mul(n, r.offset_bits()));
                if !padding_is_zero(r.offset_bytes(), used.unwrap_or(u64::MAX)) {
                    return Err(FormatError::corrupt(
                        self.path(Component::CodeOffsets),
                        "nonzero bits after the last offset",
                    ));
                }
            }
            _ => {}
        }
        let ivf = self.ivf().expect("residual kind");
        let ivf_path = self.path(ivf.component());
        if let Ivf::Rice(r) = ivf {
            if !padding_is_zero(r.bytes(), r.total_bits()) {
                return Err(FormatError::corrupt(&ivf_path, "nonzero bits after the last list"));
            }
        }
        // Every list decodes, is strictly increasing and names existing documents.
        let mut list = Vec::new();
        for cent in 0..ivf.n_lists() {
            list.clear();
            if let Err(e) = ivf.append_list(cent, &mut list) {
                return Err(FormatError::corrupt(
                    &ivf_path,
                    format!("the list of centroid {cent} does not decode: {e}"),
                ));
            }
            if let Some(&d) = list.iter().find(|&&d| d as u64 >= m.n_docs) {
                return Err(FormatError::corrupt(
                    &ivf_path,
                    format!("centroid {cent} lists document {d}, but there are {} documents", m.n_docs),
                ));
            }
            if list.windows(2).any(|p| p[0] >= p[1]) {
                return Err(FormatError::corrupt(
                    &ivf_path,
                    format!("the list of centroid {cent} is not sorted and deduplicated"),
                ));
            }
        }
        // Every (centroid, document) pair of the codes is listed, and nothing else: documents in
        // order, each list read in step with a cursor.
        let mut cursors: Vec<IvfCursor> = (0..ivf.n_lists()).map(|cent| ivf.cursor(cent)).collect();
        let unlisted = |doc: usize, cent: u32| {
            FormatError::corrupt(
                &ivf_path,
                format!("document {doc} has a token in centroid {cent} but is not in its list"),
            )
        };
        let extra = |doc: u32, cent: usize| {
            FormatError::corrupt(
                &ivf_path,
                format!("centroid {cent} lists document {doc}, which has no token assigned to it"),
            )
        };
        for doc in 0..n_docs {
            let tokens = self.doc_tokens(doc)?;
            codes.doc_centroids_into(doc, tokens, &mut seen).expect("decoded above");
            seen.sort_unstable();
            seen.dedup();
            for &cent in &seen {
                match ivf.advance(&mut cursors[cent as usize]) {
                    Some(Ok(d)) if d as usize == doc => {}
                    Some(Ok(d)) if (d as usize) < doc => return Err(extra(d, cent as usize)),
                    _ => return Err(unlisted(doc, cent)),
                }
            }
        }
        for (cent, cur) in cursors.iter_mut().enumerate() {
            if let Some(Ok(d)) = ivf.advance(cur) {
                return Err(extra(d, cent));
            }
        }
        if let Some(files) = self.warp_files() {
            let starts = self.warp_starts()?;
            let primary = crate::warp::Primary {
                doc_offsets: self.doc_offsets(),
                codes,
                residuals: self.residuals().expect("residual kind"),
                positions: mul(m.dim, m.kind.nbits()).and_then(|b| b.checked_div(8)).unwrap_or(0) as usize,
                norms: self.token_norms(),
            };
            crate::warp::verify(&files, &starts, &primary)
                .map_err(|(c, detail)| FormatError::corrupt(self.path(c), detail))?;
        }
        Ok(())
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Token offsets: document `i` owns tokens `offsets[i]..offsets[i + 1]`.
    pub fn doc_offsets(&self) -> &[u64] {
        self.typed::<u64>(Component::DocOffsets).expect("checked at open")
    }

    /// The tokens of document `doc`, `offsets[doc]..offsets[doc + 1]`, checked: opening an index
    /// checks only the first and last offsets, so every use of a document's range goes through
    /// this (or [`doc_range`]).
    ///
    /// # Errors
    /// The corruption of `doc_offsets.u64` when the offsets decrease or pass `n_tokens`, or
    /// `doc` is not a document.
    pub fn doc_tokens(&self, doc: usize) -> Result<Range<usize>> {
        doc_range(self.doc_offsets(), doc, self.meta.n_tokens).ok_or_else(|| self.bad_offsets(doc))
    }

    /// That every document's offsets are non-decreasing and within `n_tokens` (one pass over
    /// `doc_offsets.u64`, for a search that is about to read every document).
    ///
    /// # Errors
    /// The corruption of `doc_offsets.u64`, naming the first document at fault.
    pub fn check_doc_offsets(&self) -> Result<()> {
        let n = self.meta.n_tokens;
        match self.doc_offsets().windows(2).position(|w| w[0] > w[1] || w[1] > n) {
            Some(doc) => Err(self.bad_offsets(doc)),
            None => Ok(()),
        }
    }

    fn bad_offsets(&self, doc: usize) -> FormatError {
        let o = self.doc_offsets();
        let at = |i: Option<usize>| i.and_then(|i| o.get(i)).map_or("none".to_string(), |v| v.to_string());
        FormatError::corrupt(
            self.path(Component::DocOffsets),
            format!(
                "document {doc} owns tokens {} to {}: offsets must not decrease nor pass the {} tokens",
                at(Some(doc)),
                at(doc.checked_add(1)),
                self.meta.n_tokens
            ),
        )
    }

    /// All token embeddings, row-major `n_tokens × dim`.
    ///
    /// # Panics
    /// If the index has no `embeddings.f16` (a residual index built without it; see
    /// [`IndexReader::has_embeddings`]).
    pub fn embeddings(&self) -> &[f16] {
        self.typed::<f16>(Component::Embeddings).expect("the index has exact embeddings")
    }

    /// Whether the index holds exact f16 embeddings (`embeddings.f16`).
    pub fn has_embeddings(&self) -> bool {
        self.files.contains_key(&Component::Embeddings)
    }

    /// Each token's inverse decoded norm (`norms.f16`, v6; [`ResidualMeta::token_norms`]),
    /// checked at open to hold one value per token.
    pub fn token_norms(&self) -> Option<&[f16]> {
        self.files.get(&Component::TokenNorms).and_then(|m| m.payload.typed::<f16>())
    }

    /// The parameters of a residual-compressed index.
    pub fn residual(&self) -> Option<&ResidualMeta> {
        self.meta.residual.as_ref()
    }

    fn optional<T: Plain>(&self, c: Component) -> Option<&[T]> {
        self.files.contains_key(&c).then(|| self.typed::<T>(c).expect("checked at open"))
    }

    /// The centroids, row-major `n_centroids × dim` (residual kind only).
    pub fn centroids(&self) -> Option<&[f16]> {
        self.optional(Component::Centroids)
    }

    /// The codec's bucket cutoffs and weights (residual kind only).
    pub fn buckets(&self) -> Option<(&[f32], &[f32])> {
        let r = self.meta.residual?;
        let all = self.optional::<f32>(Component::Buckets)?;
        let (nc, _) = r.bucket_counts(self.meta.kind.nbits(), self.meta.dim);
        Some(all.split_at(nc))
    }

    /// The centroid of every token (residual kind only).
    pub fn codes(&self) -> Option<Codes<'_>> {
        if self.files.contains_key(&Component::CodesPacked) {
            return Some(Codes::Packed(self.packed_codes().expect("checked at open")));
        }
        if self.files.contains_key(&Component::CodesRice) {
            return Some(Codes::Runs(self.doc_codes().expect("checked at open")));
        }
        if let Some(c) = self.optional::<u16>(Component::Codes16) {
            return Some(Codes::U16(c));
        }
        self.optional::<u32>(Component::Codes32).map(Codes::U32)
    }

    /// The packed residuals, `dim · nbits / 8` bytes per token (residual kind only).
    pub fn residuals(&self) -> Option<&[u8]> {
        self.optional(Component::Residuals)
    }

    /// The inverted file, plain (v2) or Rice-coded (v3) (residual kind only).
    pub fn ivf(&self) -> Option<Ivf<'_>> {
        if self.files.contains_key(&Component::IvfRice) {
            return Some(Ivf::Rice(self.rice_lists().expect("checked at open")));
        }
        Some(Ivf::Plain { offsets: self.ivf_offsets()?, docs: self.ivf_docs()? })
    }

    /// IVF offsets of a v2 index: centroid `c` lists documents `ivf_docs()[off[c]..off[c+1]]`
    /// (`None` for other kinds and versions; see [`IndexReader::ivf`]).
    pub fn ivf_offsets(&self) -> Option<&[u64]> {
        self.optional(Component::IvfOffsets)
    }

    /// IVF document lists of a v2 index, sorted and deduplicated per centroid (`None` for other
    /// kinds and versions; see [`IndexReader::ivf`]).
    pub fn ivf_docs(&self) -> Option<&[u32]> {
        self.optional(Component::IvfDocs)
    }

    /// The token embeddings of document `doc`, row-major.
    ///
    /// # Errors
    /// If the document's offsets are corrupt (see [`IndexReader::doc_tokens`]).
    ///
    /// # Panics
    /// If the index has no `embeddings.f16` (see [`IndexReader::embeddings`]).
    pub fn doc_embeddings(&self, doc: usize) -> Result<&[f16]> {
        let tokens = self.doc_tokens(doc)?;
        let dim = self.meta.dim;
        // Within n_tokens, so within n_tokens × dim, which was checked at open to fit.
        let rows = tokens.start.checked_mul(dim).zip(tokens.end.checked_mul(dim));
        rows.and_then(|(a, b)| self.embeddings().get(a..b)).ok_or_else(|| self.bad_offsets(doc))
    }

    /// The external id of document `doc` (invalid UTF-8 is replaced; `verify` reports it).
    pub fn doc_id(&self, doc: usize) -> std::borrow::Cow<'_, str> {
        let o = self.typed::<u64>(Component::DocIdOffsets).expect("checked at open");
        let bytes = &self.files[&Component::DocIdBytes].payload;
        match doc_range(o, doc, bytes.len() as u64) {
            Some(r) => String::from_utf8_lossy(&bytes[r]),
            None => std::borrow::Cow::Borrowed("<corrupt id>"),
        }
    }

    /// Every file of the index with its size in bytes (payload and footer), by component id.
    pub fn file_sizes(&self) -> Vec<(Component, u64)> {
        let mut v: Vec<_> = self
            .files
            .iter()
            .map(|(&c, m)| (c, (m.payload.len() as u64).saturating_add(crate::footer::FOOTER_LEN as u64)))
            .collect();
        v.sort_by_key(|(c, _)| c.id());
        v
    }

    /// Total size in bytes of the index files.
    pub fn size_bytes(&self) -> u64 {
        self.file_sizes().iter().fold(0u64, |sum, &(_, n)| sum.saturating_add(n))
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn document_ranges_are_checked() {
        let offsets = [0u64, 3, 3, 7];
        assert_eq!(doc_range(&offsets, 0, 7), Some(0..3));
        assert_eq!(doc_range(&offsets, 1, 7), Some(3..3));
        assert_eq!(doc_range(&offsets, 2, 7), Some(3..7));
        // Past the last document, or past the token count.
        assert_eq!(doc_range(&offsets, 3, 7), None);
        assert_eq!(doc_range(&offsets, usize::MAX, 7), None);
        assert_eq!(doc_range(&offsets, 2, 6), None);
        // Decreasing, and absurd.
        assert_eq!(doc_range(&[0, 5, 4, 9], 1, 9), None);
        assert_eq!(doc_range(&[0, 1 << 24, 9], 0, 9), None);
        assert_eq!(doc_range(&[0, u64::MAX], 0, u64::MAX), usize::try_from(u64::MAX).ok().map(|e| 0..e));
    }

    /// D11: a FIFO would block `File::open` until a writer appears; it is refused unopened.
    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::TempDir::new().unwrap();
        let err = open_regular(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a directory)"), "{err}");
        assert!(matches!(open_regular(&dir.path().join("absent")), Err(FormatError::Missing { .. })));
        let fifo = dir.path().join("meta.json");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = open_regular(&fifo).unwrap_err().to_string();
            assert!(err.contains("meta.json") && err.contains("not a regular file"), "{err}");
        }
    }
}
