//! Grouping a segment's tokens by centroid (the WARP search mode's layout,
//! [`index_format::warp`]): once in memory for an index without the stored copy, or written as
//! the `warp_*` files of a v7 index built with [`super::CompressedParams::warp_layout`].
//!
//! Both go through [`group_range`], so a stored layout holds exactly the bytes the in-memory
//! build makes.

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;

use half::f16;
use index_format::bytes::{as_bytes, cast_slice};
use index_format::runs::DocCodes;
use index_format::warp::{block_starts, BLOCK, PADDING_DOC};
use index_format::{Component, IndexWriter};

use super::compressed::WrittenFile;
use crate::error::{EngineError, Result};

/// Most bytes of slots (code bytes, document and factor) [`write`] holds in memory at once: the
/// centroids are written in ranges of at most this many, each range one pass over the codes.
pub const WRITE_BUDGET_BYTES: usize = 256 << 20;

/// A segment's tokens, document by document: what grouping reads.
pub(crate) trait TokenSource {
    /// Number of documents.
    fn n_docs(&self) -> usize;
    /// Document `doc`'s codes (in stored order) into `out`, each below the centroid count, and
    /// its tokens' range.
    fn doc_codes(&self, doc: usize, out: &mut Vec<u32>) -> Result<Range<usize>>;
}

/// Per centroid, the tokens assigned to it, and each centroid's first block
/// ([`block_starts`]).
pub(crate) fn count(source: &impl TokenSource, n_centroids: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut counts = vec![0u32; n_centroids];
    let mut codes = Vec::new();
    let too_many = || EngineError::InvalidArgument("a centroid holds more than 2^32 tokens".into());
    for doc in 0..source.n_docs() {
        source.doc_codes(doc, &mut codes)?;
        for &c in &codes {
            let n = &mut counts[c as usize];
            *n = n.checked_add(1).ok_or_else(too_many)?;
        }
    }
    let starts = block_starts(&counts).ok_or_else(|| {
        EngineError::InvalidArgument("too many tokens for a centroid-grouped layout".into())
    })?;
    Ok((counts, starts))
}

/// The slots of the centroids `cells`, blocks `starts[cells.start] .. starts[cells.end]`:
/// their residual bytes (`positions` per token, position-major per block), documents and
/// factors (`factors[token]`, or `one` without them), padding slots zero, [`PADDING_DOC`] and
/// `pad`. Tokens keep document order within a centroid.
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_range<F: Copy>(
    source: &impl TokenSource,
    starts: &[u32],
    cells: Range<usize>,
    positions: usize,
    residuals: &[u8],
    factors: Option<&[F]>,
    one: F,
    pad: F,
) -> Result<(Vec<u8>, Vec<u32>, Vec<F>)> {
    let first_slot = starts[cells.start] as usize * BLOCK;
    let slots = starts[cells.end] as usize * BLOCK - first_slot;
    let mut codes_out = vec![0u8; slots * positions];
    let mut docs = vec![PADDING_DOC; slots];
    let mut scale = vec![pad; slots];
    // Each centroid's next free slot, relative to the range's first.
    let mut next: Vec<usize> =
        starts[cells.clone()].iter().map(|&b| b as usize * BLOCK - first_slot).collect();
    let mut codes = Vec::new();
    for doc in 0..source.n_docs() {
        let range = source.doc_codes(doc, &mut codes)?;
        for (t, &c) in range.zip(&codes) {
            let c = c as usize;
            if !cells.contains(&c) {
                continue;
            }
            let slot = next[c - cells.start];
            next[c - cells.start] += 1;
            let base = slot / BLOCK * BLOCK * positions + slot % BLOCK;
            for (p, &b) in residuals[t * positions..(t + 1) * positions].iter().enumerate() {
                codes_out[base + p * BLOCK] = b;
            }
            docs[slot] = doc as u32;
            scale[slot] = factors.map_or(one, |f| f[t]);
        }
    }
    Ok((codes_out, docs, scale))
}

/// The finished codes of a segment being written, to group.
struct Written<'a> {
    codes: DocCodes<'a>,
    doc_offsets: &'a [u64],
    file: &'a WrittenFile,
}

impl TokenSource for Written<'_> {
    fn n_docs(&self) -> usize {
        self.doc_offsets.len() - 1
    }

    fn doc_codes(&self, doc: usize, out: &mut Vec<u32>) -> Result<Range<usize>> {
        let (a, b) = (self.doc_offsets[doc] as usize, self.doc_offsets[doc + 1] as usize);
        self.codes
            .tokens_into(doc, b - a, out)
            .map_err(|e| self.file.corrupt(format!("document {doc} just written does not decode: {e}")))?;
        Ok(a..b)
    }
}

/// Writes the `warp_*` files of the segment in `writer`'s temporary directory from its finished
/// codes, residuals and (when `norms`) token norms, read back memory-mapped. Memory: the
/// counts plus at most [`WRITE_BUDGET_BYTES`] of slots.
pub(crate) fn write(
    writer: &IndexWriter,
    doc_offsets: &[u64],
    code_offsets: &[u8],
    n_centroids: usize,
    positions: usize,
    norms: bool,
) -> Result<()> {
    let codes_file = WrittenFile::open(writer, Component::CodesRice)?;
    let codes = codes_file.doc_codes(code_offsets, doc_offsets, n_centroids)?;
    let residuals_file = WrittenFile::open(writer, Component::Residuals)?;
    let residuals = residuals_file.payload()?;
    let norms_file = if norms { Some(WrittenFile::open(writer, Component::TokenNorms)?) } else { None };
    let factors: Option<&[f16]> = match &norms_file {
        Some(file) => Some(
            cast_slice::<f16>(file.payload()?)
                .ok_or_else(|| file.corrupt("the norms just written are misaligned".into()))?,
        ),
        None => None,
    };
    let source = Written { codes, doc_offsets, file: &codes_file };
    let (counts, starts) = count(&source, n_centroids)?;
    writer.write_component(Component::WarpCounts, as_bytes(&counts))?;
    let mut out_codes = writer.component(Component::WarpCodes)?;
    let mut out_docs = writer.component(Component::WarpDocs)?;
    let mut out_norms = if norms { Some(writer.component(Component::WarpNorms)?) } else { None };
    let per_block = BLOCK * (positions + 4 + if norms { 2 } else { 0 });
    let budget_blocks = (WRITE_BUDGET_BYTES / per_block).max(1);
    let mut lo = 0;
    while lo < n_centroids {
        // The range lo..hi: at least one centroid, else as many as fit the budget.
        let mut hi = lo + 1;
        while hi < n_centroids && (starts[hi + 1] - starts[lo]) as usize <= budget_blocks {
            hi += 1;
        }
        let (codes, docs, scale) =
            group_range(&source, &starts, lo..hi, positions, residuals, factors, f16::ONE, f16::ZERO)?;
        let io = |path: PathBuf| move |e| EngineError::Io { path, source: e };
        out_codes.write_all(&codes).map_err(io(out_codes.path().to_path_buf()))?;
        out_docs.write_all(as_bytes(&docs)).map_err(io(out_docs.path().to_path_buf()))?;
        if let Some(out) = out_norms.as_mut() {
            out.write_all(as_bytes(&scale)).map_err(io(out.path().to_path_buf()))?;
        }
        lo = hi;
    }
    out_codes.finish()?;
    out_docs.finish()?;
    if let Some(out) = out_norms {
        out.finish()?;
    }
    Ok(())
}
