//! Per-document run-coded centroid codes of format version 4 (`codes.rice` and
//! `code_offsets.packed`).
//!
//! A v4 residual index stores each document's tokens ordered by their centroid, so that the
//! document's codes are non-decreasing. They are coded as runs: for each distinct centroid
//! `u_0 < u_1 < …` of the document, the gap `u_i − u_{i−1} − 1` (with `u_{−1} = −1`) as a
//! Golomb–Rice code with the document's parameter [`doc_rice_param`], then the run length
//! `n_i ≥ 1` as `n_i − 1` zero bits and a one bit. The documents follow one another in one bit
//! stream (see [`crate::packed`] for the bit order and padding word); `code_offsets.packed` holds
//! the `n_docs + 1` bit offsets where each document starts (the last one is the stream's length),
//! packed at [`offset_bits`] bits each.
//!
//! Stages that only need the centroids a document touches (candidate scoring) read the distinct
//! codes and skip the run lengths: a document of 32 tokens over 17 centroids is 17 codes, not 32.
//! See docs/FORMAT.md, "Version 4".

use std::io::{self, Write};

use crate::packed::{code_bits, next_rice, packed_words, window, BitWriter};

/// The most bits an offset of `code_offsets.packed` may take (57: one window read).
pub const MAX_OFFSET_BITS: u32 = 57;

/// The Rice parameter of a document of `len` tokens in an index of `n_centroids` centroids:
/// `code_bits(C) − code_bits(len)`, floored at 0 (about `log2(C / len)`, the typical gap between
/// the centroids of a document's tokens).
pub fn doc_rice_param(n_centroids: u64, len: u64) -> u32 {
    code_bits(n_centroids).saturating_sub(code_bits(len.max(1)))
}

/// Bits per entry of `code_offsets.packed` for a `codes.rice` payload of `stream_bytes` bytes
/// (padding word included): enough for any bit position up to `8 · stream_bytes`.
pub fn offset_bits(stream_bytes: u64) -> u32 {
    (u64::BITS - (stream_bytes.saturating_mul(8)).leading_zeros()).max(1)
}

/// Appends one document's codes to `out`: `sorted` must be non-decreasing (the codes of the
/// document's tokens in stored order), `k` its [`doc_rice_param`].
pub fn put_doc_runs<W: Write>(out: &mut BitWriter<W>, sorted: &[u32], k: u32) -> io::Result<()> {
    let mut next = 0u64;
    let mut i = 0;
    while i < sorted.len() {
        let code = sorted[i];
        let run = sorted[i..].iter().take_while(|&&c| c == code).count();
        debug_assert!(code as u64 >= next, "codes are not sorted");
        out.put_rice(code as u64 - next, k)?;
        out.put_rice(run as u64 - 1, 0)?;
        next = code as u64 + 1;
        i += run;
    }
    Ok(())
}

/// The payload of `code_offsets.packed`: the `n_docs + 1` bit offsets of every document (the
/// last one the stream's length) packed at [`offset_bits`]`(stream_bytes)` bits each, for a
/// `codes.rice` payload of `stream_bytes` bytes. `None` if that width exceeds
/// [`MAX_OFFSET_BITS`].
pub fn pack_offsets(offsets: &[u64], stream_bytes: u64) -> Option<Vec<u8>> {
    let bits = offset_bits(stream_bytes);
    if bits > MAX_OFFSET_BITS {
        return None;
    }
    let mut w = BitWriter::new(Vec::new());
    for &o in offsets {
        w.put(o, bits).expect("writing to memory");
    }
    Some(w.finish().expect("writing to memory"))
}

/// Codes whole documents in memory (each one's codes sorted), as the builder streams them: the
/// payloads of `codes.rice` and `code_offsets.packed`.
pub fn encode_docs(docs: &[Vec<u32>], n_centroids: u64) -> (Vec<u8>, Vec<u8>) {
    let mut w = BitWriter::new(Vec::new());
    let mut offsets = vec![0u64];
    for d in docs {
        put_doc_runs(&mut w, d, doc_rice_param(n_centroids, d.len() as u64)).expect("writing to memory");
        offsets.push(w.bits());
    }
    let stream = w.finish().expect("writing to memory");
    let packed = pack_offsets(&offsets, stream.len() as u64).expect("an in-memory stream fits");
    (stream, packed)
}

/// Why a document's codes do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsError {
    /// The document's bit offsets decrease or point past the stream.
    Offsets,
    /// The codes run past the document's end, or stop before it.
    Overrun,
    /// A code is not a centroid.
    Code(u64),
    /// The runs do not add up to the document's token count.
    Count,
}

impl std::fmt::Display for RunsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunsError::Offsets => f.write_str("its bit offsets decrease or point past the stream"),
            RunsError::Overrun => f.write_str("its codes do not end where the next document starts"),
            RunsError::Code(c) => write!(f, "it decodes to code {c}, which is not a centroid"),
            RunsError::Count => f.write_str("its runs do not add up to its token count"),
        }
    }
}

/// Why the two files of run-coded codes do not fit together (see [`DocCodes::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunsShapeError {
    /// `code_offsets.packed` is not the size `n_docs + 1` offsets need.
    OffsetsLength {
        /// Bytes found.
        bytes: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The first offset is not 0, or the last is not a length that `codes.rice`'s size allows.
    Ends {
        /// The first offset.
        first: u64,
        /// The last offset (the stream's length in bits).
        last: u64,
        /// Bytes in `codes.rice`.
        stream_bytes: u64,
    },
}

/// The codes of a v4 residual index: one run-coded stream of every document's codes, located by
/// per-document bit offsets.
#[derive(Debug, Clone, Copy)]
pub struct DocCodes<'a> {
    bytes: &'a [u8],
    offsets: &'a [u8],
    offset_bits: u32,
    n_docs: usize,
    n_tokens: usize,
    n_centroids: u64,
    /// The last offset: the stream's length in bits.
    total_bits: u64,
}

impl<'a> DocCodes<'a> {
    /// Views the stream `bytes` (`codes.rice`, padding word included) and its offsets
    /// `offsets` (`code_offsets.packed`), checking their sizes and the first and last offsets.
    /// These checks make every decode memory-safe and panic-free (each document's offsets are
    /// checked when it is decoded); the contents are checked by decoding.
    pub fn new(
        bytes: &'a [u8],
        offsets: &'a [u8],
        n_docs: usize,
        n_tokens: usize,
        n_centroids: u64,
    ) -> Result<Self, RunsShapeError> {
        let stream_bytes = bytes.len() as u64;
        let w = offset_bits(stream_bytes);
        let expected = 8 * packed_words((n_docs as u64 + 1).saturating_mul(w as u64));
        if offsets.len() as u64 != expected || w > MAX_OFFSET_BITS {
            return Err(RunsShapeError::OffsetsLength { bytes: offsets.len() as u64, expected });
        }
        let mut codes = Self { bytes, offsets, offset_bits: w, n_docs, n_tokens, n_centroids, total_bits: 0 };
        let (first, last) = (codes.offset(0), codes.offset(n_docs));
        if first != 0 || stream_bytes < 8 || stream_bytes != 8 * packed_words(last) {
            return Err(RunsShapeError::Ends { first, last, stream_bytes });
        }
        codes.total_bits = last;
        Ok(codes)
    }

    /// The bit where document `doc ≤ n_docs` starts (`n_docs`: the stream's length).
    #[inline(always)]
    fn offset(&self, doc: usize) -> u64 {
        let w = self.offset_bits as u64;
        window(self.offsets, doc as u64 * w) & ((1u64 << w) - 1)
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.n_docs
    }

    /// Number of tokens.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// The stream, padding word included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The offsets' packed stream, padding word included.
    pub fn offset_bytes(&self) -> &'a [u8] {
        self.offsets
    }

    /// Bits per offset.
    pub fn offset_bits(&self) -> u32 {
        self.offset_bits
    }

    /// Bits of codes (the last offset).
    pub fn total_bits(&self) -> u64 {
        self.total_bits
    }

    /// Calls `f(code, run)` for each distinct centroid of document `doc` (of `len` tokens), in
    /// increasing order, with the number of its tokens in it.
    #[inline]
    pub fn for_each_run(&self, doc: usize, len: usize, mut f: impl FnMut(u32, u32)) -> Result<(), RunsError> {
        let (start, end) = (self.offset(doc), self.offset(doc + 1));
        if start > end || end > self.total_bits {
            return Err(RunsError::Offsets);
        }
        let k = doc_rice_param(self.n_centroids, len as u64);
        let mut pos = start;
        let mut next = 0u64;
        let mut left = len as u64;
        while left > 0 {
            if pos >= end {
                return Err(RunsError::Overrun);
            }
            let code = next + next_rice(self.bytes, &mut pos, end, k).map_err(|_| RunsError::Overrun)?;
            if code >= self.n_centroids {
                return Err(RunsError::Code(code));
            }
            if pos >= end {
                return Err(RunsError::Overrun);
            }
            let run = next_rice(self.bytes, &mut pos, end, 0).map_err(|_| RunsError::Overrun)? + 1;
            if run > left {
                return Err(RunsError::Count);
            }
            f(code as u32, run as u32);
            left -= run;
            next = code + 1;
        }
        if pos != end {
            return Err(RunsError::Overrun);
        }
        Ok(())
    }

    /// The distinct centroids of document `doc` (of `len` tokens), increasing, into `out`
    /// (cleared first).
    #[inline]
    pub fn distinct_into(&self, doc: usize, len: usize, out: &mut Vec<u32>) -> Result<(), RunsError> {
        out.clear();
        self.for_each_run(doc, len, |c, _| out.push(c))
    }

    /// The bytes holding document `doc`'s codes (empty where its offsets are out of range): for
    /// a caller that loads them ahead of decoding.
    pub fn doc_bytes(&self, doc: usize) -> &'a [u8] {
        if doc >= self.n_docs {
            return &[];
        }
        let (start, end) = (self.offset(doc) / 8, self.offset(doc + 1).div_ceil(8));
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| self.bytes.get(s..e.min(self.bytes.len())))
            .unwrap_or_default()
    }

    /// The bytes holding document `doc`'s offset (read by [`DocCodes::doc_bytes`] and every
    /// decode), for a caller that loads them ahead; empty past the last document.
    pub fn doc_offset_bytes(&self, doc: usize) -> &'a [u8] {
        let at = (doc as u64).saturating_mul(self.offset_bits as u64) / 8;
        usize::try_from(at)
            .ok()
            .and_then(|a| self.offsets.get(a..(a + 8).min(self.offsets.len())))
            .unwrap_or_default()
    }

    /// The code of every token of document `doc` (of `len` tokens), in stored order, into `out`
    /// (cleared first).
    pub fn tokens_into(&self, doc: usize, len: usize, out: &mut Vec<u32>) -> Result<(), RunsError> {
        out.clear();
        self.for_each_run(doc, len, |c, n| out.extend(std::iter::repeat_n(c, n as usize)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parameter_follows_centroids_per_token() {
        assert_eq!(doc_rice_param(8192, 32), 8);
        assert_eq!(doc_rice_param(8192, 33), 7);
        assert_eq!(doc_rice_param(8192, 1), 12);
        assert_eq!(doc_rice_param(8192, 0), 12);
        assert_eq!(doc_rice_param(16, 1000), 0);
        assert_eq!(offset_bits(8), 7);
        assert_eq!(offset_bits(16), 8);
    }

    #[test]
    fn runs_of_one_document() {
        let docs = vec![vec![0, 0, 3, 7, 7, 7, 4095]];
        let (s, o) = encode_docs(&docs, 4096);
        let c = DocCodes::new(&s, &o, 1, 7, 4096).unwrap();
        let mut runs = Vec::new();
        c.for_each_run(0, 7, |code, n| runs.push((code, n))).unwrap();
        assert_eq!(runs, vec![(0, 2), (3, 1), (7, 3), (4095, 1)]);
        let mut v = Vec::new();
        c.tokens_into(0, 7, &mut v).unwrap();
        assert_eq!(v, docs[0]);
        c.distinct_into(0, 7, &mut v).unwrap();
        assert_eq!(v, vec![0, 3, 7, 4095]);
        // A wrong token count or a smaller centroid count is detected.
        assert_eq!(c.tokens_into(0, 5, &mut v), Err(RunsError::Count));
        assert_eq!(c.tokens_into(0, 6, &mut v), Err(RunsError::Overrun));
        assert_eq!(c.tokens_into(0, 8, &mut v), Err(RunsError::Overrun));
        let small = DocCodes::new(&s, &o, 1, 7, 4000).unwrap();
        assert_eq!(small.distinct_into(0, 7, &mut v), Err(RunsError::Code(4095)));
    }

    #[test]
    fn shapes_are_checked() {
        let docs = vec![vec![1, 2], vec![5]];
        let (s, o) = encode_docs(&docs, 64);
        assert!(DocCodes::new(&s, &o, 2, 3, 64).is_ok());
        assert!(DocCodes::new(&s, &o, 3, 3, 64).is_err());
        assert!(matches!(DocCodes::new(&s, &o[..8], 2, 3, 64), Err(RunsShapeError::OffsetsLength { .. })));
        let mut longer = s.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(DocCodes::new(&longer, &o, 2, 3, 64).is_err());
    }

    proptest! {
        /// Any documents round-trip, whatever their lengths and centroid counts; corrupting a
        /// bit never panics.
        #[test]
        fn documents_round_trip(
            n_centroids in 1u64..100_000,
            raw in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 1..80), 1..20),
            flip in any::<usize>(),
        ) {
            let docs: Vec<Vec<u32>> = raw
                .iter()
                .map(|d| {
                    let mut d: Vec<u32> = d.iter().map(|&c| (c as u64 % n_centroids.min(1 + d.len() as u64 * 3)) as u32).collect();
                    d.sort_unstable();
                    d
                })
                .collect();
            let n_tokens = docs.iter().map(Vec::len).sum();
            let (mut s, o) = encode_docs(&docs, n_centroids);
            let c = DocCodes::new(&s, &o, docs.len(), n_tokens, n_centroids).unwrap();
            let mut v = Vec::new();
            for (i, d) in docs.iter().enumerate() {
                c.tokens_into(i, d.len(), &mut v).unwrap();
                prop_assert_eq!(&v, d);
                c.distinct_into(i, d.len(), &mut v).unwrap();
                let mut u = d.clone();
                u.dedup();
                prop_assert_eq!(&v, &u);
            }
            let bits = c.total_bits();
            if bits > 0 {
                let b = (flip as u64 % bits) as usize;
                s[b / 8] ^= 1 << (b % 8);
                let c = DocCodes::new(&s, &o, docs.len(), n_tokens, n_centroids).unwrap();
                for (i, d) in docs.iter().enumerate() {
                    let _ = c.tokens_into(i, d.len(), &mut v);
                }
            }
        }
    }
}
