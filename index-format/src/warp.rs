//! The centroid-grouped copy of a residual index's tokens (format v7, optional; see
//! `docs/FORMAT.md`, "Version 7"), which the WARP search mode reads in place.
//!
//! The tokens of centroid `c` take the slots `first[c] · BLOCK ..` (`first` from
//! [`block_starts`] of the per-centroid counts), in stored order (documents in order, each
//! document's tokens as its codes list them); a centroid's last block is padded to [`BLOCK`]
//! slots. Within a block, byte position `p` of slot `s` is at `p · BLOCK + s`.
#![deny(clippy::arithmetic_side_effects)]

use half::f16;

use crate::component::Component;
use crate::reader::Codes;

/// Tokens per block of the layout.
pub const BLOCK: usize = 64;

/// The document number of a padding slot.
pub const PADDING_DOC: u32 = u32::MAX;

/// Per centroid, the first block of its tokens, and last the total: `counts.len() + 1` entries.
/// `None` when the total number of slots does not fit a `u32` block count and a `usize` slot
/// count (a corrupt or impossibly large count).
pub fn block_starts(counts: &[u32]) -> Option<Vec<u32>> {
    let mut starts = Vec::with_capacity(counts.len().checked_add(1)?);
    let mut blocks = 0u32;
    for &n in counts {
        starts.push(blocks);
        blocks = blocks.checked_add(n.div_ceil(BLOCK as u32))?;
    }
    starts.push(blocks);
    (blocks as usize).checked_mul(BLOCK)?;
    Some(starts)
}

/// The files of a centroid-grouped layout, as an index maps them (their lengths checked against
/// each other and the metadata when the index was opened).
#[derive(Debug, Clone, Copy)]
pub struct WarpFiles<'a> {
    /// Per centroid, its tokens (`warp_counts.u32`).
    pub counts: &'a [u32],
    /// Per block, `positions × BLOCK` residual bytes, position-major (`warp_codes.u8`).
    pub codes: &'a [u8],
    /// Per slot, its document, [`PADDING_DOC`] for padding (`warp_docs.u32`).
    pub docs: &'a [u32],
    /// Per slot, its token's norm factor, 0 for padding (`warp_norms.f16`), when the index
    /// stores token norms.
    pub norms: Option<&'a [f16]>,
}

/// What the primary (document-ordered) data of a segment holds, to check a layout against.
pub(crate) struct Primary<'a> {
    pub doc_offsets: &'a [u64],
    pub codes: Codes<'a>,
    /// Packed residual bytes, `positions` per token.
    pub residuals: &'a [u8],
    pub positions: usize,
    pub norms: Option<&'a [f16]>,
}

/// Checks that `files` is exactly the grouping of `primary`: every token in its centroid's next
/// slot with its document, residual bytes and norm factor, and every padding slot empty. Returns
/// the file at fault and what is wrong. Lengths were checked at open (`starts` from
/// [`block_starts`] of `files.counts`, `codes`, `docs` and `norms` of the slot count it implies).
// Indices below are bounded by the lengths of slices in memory (checked at open against the
// slot count, itself checked not to overflow), so they cannot wrap.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn verify(
    files: &WarpFiles<'_>,
    starts: &[u32],
    primary: &Primary<'_>,
) -> Result<(), (Component, String)> {
    let positions = primary.positions;
    let n_docs = primary.doc_offsets.len().saturating_sub(1);
    let mut next: Vec<usize> = starts[..files.counts.len()].iter().map(|&b| b as usize * BLOCK).collect();
    let mut codes = Vec::new();
    for doc in 0..n_docs {
        let (a, b) = (primary.doc_offsets[doc] as usize, primary.doc_offsets[doc + 1] as usize);
        primary
            .codes
            .doc_tokens_into(doc, a..b, &mut codes)
            .map_err(|e| (primary.codes.component(), format!("document {doc} does not decode: {e}")))?;
        for (i, &c) in codes.iter().enumerate() {
            let t = a + i;
            let c = c as usize;
            if c >= files.counts.len() {
                return Err((
                    primary.codes.component(),
                    format!("token {t} has code {c}, past the last centroid"),
                ));
            }
            let end = starts[c] as usize * BLOCK + files.counts[c] as usize;
            let slot = next[c];
            if slot >= end {
                return Err((
                    Component::WarpCounts,
                    format!("centroid {c} holds more than its {} tokens", files.counts[c]),
                ));
            }
            next[c] += 1;
            if files.docs[slot] as usize != doc {
                return Err((
                    Component::WarpDocs,
                    format!("slot {slot} names document {}, expected {doc} (token {t})", files.docs[slot]),
                ));
            }
            let base = slot / BLOCK * BLOCK * positions + slot % BLOCK;
            let row = &primary.residuals[t * positions..(t + 1) * positions];
            if let Some(p) = (0..positions).find(|&p| files.codes[base + p * BLOCK] != row[p]) {
                return Err((
                    Component::WarpCodes,
                    format!("slot {slot}, byte position {p} differs from token {t}"),
                ));
            }
            if let (Some(grouped), Some(norms)) = (files.norms, primary.norms) {
                if grouped[slot].to_bits() != norms[t].to_bits() {
                    return Err((Component::WarpNorms, format!("slot {slot} differs from token {t}")));
                }
            }
        }
    }
    // Padding: from each centroid's last token to the end of its last block.
    for (c, &first) in next.iter().enumerate() {
        for slot in first..starts[c + 1] as usize * BLOCK {
            if files.docs[slot] != PADDING_DOC {
                return Err((
                    Component::WarpDocs,
                    format!("padding slot {slot} names document {}", files.docs[slot]),
                ));
            }
            let base = slot / BLOCK * BLOCK * positions + slot % BLOCK;
            if (0..positions).any(|p| files.codes[base + p * BLOCK] != 0) {
                return Err((Component::WarpCodes, format!("padding slot {slot} has nonzero bytes")));
            }
            if files.norms.is_some_and(|n| n[slot].to_bits() != 0) {
                return Err((Component::WarpNorms, format!("padding slot {slot} has a nonzero factor")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_starts_round_each_centroid_up_to_whole_blocks() {
        assert_eq!(block_starts(&[]), Some(vec![0]));
        assert_eq!(block_starts(&[0, 1, 64, 65, 0]), Some(vec![0, 0, 1, 2, 4, 4]));
        assert_eq!(block_starts(&[u32::MAX]), Some(vec![0, u32::MAX.div_ceil(64)]));
        let many = vec![u32::MAX; 70];
        assert_eq!(block_starts(&many), None, "more blocks than a u32 counts");
    }
}
