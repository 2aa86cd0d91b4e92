//! The bit-packed arrays of format version 3: fixed-width centroid codes and Rice-coded inverted
//! lists.
//!
//! Both are streams of bits written least significant first into little-endian u64 words (bit
//! `i` of the stream is bit `i % 64` of word `i / 64`), followed by one zero word. The extra word
//! lets a reader load any 64-bit window that starts inside the stream with one unaligned read:
//! [`window`] returns at least 57 valid bits from any bit position.
//!
//! - **Codes** ([`PackedCodes`]): token `t`'s code is bits `t·b .. t·b + b` with
//!   `b = `[`code_bits`]`(C)`.
//! - **Inverted lists** ([`RiceLists`]): list `c` is bits `off[c] .. off[c+1]`; it codes its
//!   documents `d_0 < d_1 < …` as the values `d_0, d_1 − d_0 − 1, d_2 − d_1 − 1, …`, each as a
//!   Golomb–Rice code with the list's parameter `k`: `v >> k` zero bits, one 1 bit, then the low
//!   `k` bits of `v`. The list ends where the next begins.
//!
//! See docs/FORMAT.md, "Version 3".

use std::io::{self, Write};

/// The most bits a Rice parameter may have: values are below 2^32.
pub const MAX_RICE_PARAM: u32 = 32;

/// Bits per code for `n_centroids` centroids: `max(1, ceil(log2(n_centroids)))`.
pub fn code_bits(n_centroids: u64) -> u32 {
    (u64::BITS - n_centroids.saturating_sub(1).leading_zeros()).max(1)
}

/// Number of u64 words that hold a stream of `n_bits` bits: the whole words of the stream plus
/// the zero padding word.
pub fn packed_words(n_bits: u64) -> u64 {
    n_bits.div_ceil(64) + 1
}

/// The 64 bits starting at byte `pos / 8` of `bytes`, shifted right by `pos % 8`: bits
/// `pos .. pos + 57` of the stream are its low 57 bits.
///
/// # Panics
/// If the 8 bytes are not all inside `bytes` (never for `pos` inside a stream that has its
/// padding word).
#[inline(always)]
pub fn window(bytes: &[u8], pos: u64) -> u64 {
    let i = (pos >> 3) as usize;
    let raw: [u8; 8] = bytes[i..i + 8].try_into().expect("8 bytes");
    u64::from_le_bytes(raw) >> (pos & 7)
}

/// Whether every bit of the stream `bytes` from bit `used` on (the rest of the last word and the
/// padding word) is zero.
pub fn padding_is_zero(bytes: &[u8], used: u64) -> bool {
    let first = (used / 8) as usize;
    let Some(rest) = bytes.get(first..) else { return false };
    let partial = used % 8;
    rest.first().is_none_or(|&b| b >> partial == 0) && rest.iter().skip(1).all(|&b| b == 0)
}

/// Writes a bit stream (least significant bit first, little-endian u64 words) to `W`, then the
/// padding word on [`BitWriter::finish`]. Whole words are buffered and written in blocks.
#[derive(Debug)]
pub struct BitWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    acc: u64,
    filled: u32,
    bits: u64,
}

/// Bytes a [`BitWriter`] gathers before writing them out.
const WRITE_BLOCK: usize = 1 << 16;

impl<W: Write> BitWriter<W> {
    /// Starts an empty stream.
    pub fn new(inner: W) -> Self {
        Self { inner, buf: Vec::with_capacity(WRITE_BLOCK), acc: 0, filled: 0, bits: 0 }
    }

    /// Bits written so far.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// The underlying writer (to name it in errors).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    #[inline]
    fn push_word(&mut self, word: u64) -> io::Result<()> {
        self.buf.extend_from_slice(&word.to_le_bytes());
        if self.buf.len() >= WRITE_BLOCK {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends the low `width` bits of `value` (`width ≤ 64`; the other bits must be zero).
    #[inline]
    pub fn put(&mut self, value: u64, width: u32) -> io::Result<()> {
        debug_assert!(width <= 64 && (width == 64 || value >> width == 0), "{value} in {width} bits");
        if width == 0 {
            return Ok(());
        }
        self.acc |= value << self.filled;
        let total = self.filled + width;
        self.bits += width as u64;
        if total < 64 {
            self.filled = total;
            return Ok(());
        }
        self.push_word(self.acc)?;
        self.acc = if self.filled == 0 { 0 } else { value >> (64 - self.filled) };
        self.filled = total - 64;
        Ok(())
    }

    /// Appends `v` as a Golomb–Rice code with parameter `k ≤ 32`: `v >> k` zero bits, a one
    /// bit, the low `k` bits of `v`.
    pub fn put_rice(&mut self, v: u64, k: u32) -> io::Result<()> {
        debug_assert!(k <= MAX_RICE_PARAM);
        let mut q = v >> k;
        while q >= 64 {
            self.put(0, 64)?;
            q -= 64;
        }
        self.put(0, q as u32)?;
        self.put(((v & ((1u64 << k) - 1)) << 1) | 1, k + 1)
    }

    /// Writes the last partial word and the zero padding word; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.filled > 0 {
            self.push_word(self.acc)?;
        }
        self.push_word(0)?;
        self.inner.write_all(&self.buf)?;
        Ok(self.inner)
    }
}

/// Centroid codes packed at a fixed number of bits per token (format v3 `codes.packed`).
#[derive(Debug, Clone, Copy)]
pub struct PackedCodes<'a> {
    bytes: &'a [u8],
    bits: u32,
    mask: u64,
    len: usize,
}

impl<'a> PackedCodes<'a> {
    /// Views `bytes` (the payload, padding word included) as `len` codes of `bits` bits; `None`
    /// if `bits` is not in `1..=32` or the payload is not exactly
    /// [`packed_words`]`(len · bits)` words.
    pub fn new(bytes: &'a [u8], bits: u32, len: usize) -> Option<Self> {
        if !(1..=32).contains(&bits) || bytes.len() as u64 != 8 * packed_words(len as u64 * bits as u64) {
            return None;
        }
        Some(Self { bytes, bits, mask: (1u64 << bits) - 1, len })
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The packed stream, padding word included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The code of token `t` (`t < len`; beyond it the result is meaningless or a panic): one
    /// unaligned 64-bit load, a shift and a mask.
    #[inline(always)]
    pub fn get(&self, t: usize) -> u32 {
        debug_assert!(t < self.len);
        (window(self.bytes, (t * self.bits as usize) as u64) & self.mask) as u32
    }

    /// Decodes the codes of tokens `start .. start + out.len()` into `out`. Up to 14 bits per
    /// code (16384 centroids), one load gives four codes.
    #[inline(always)]
    pub fn decode_into(&self, start: usize, out: &mut [u32]) {
        debug_assert!(start + out.len() <= self.len);
        let (bits, mask) = (self.bits, self.mask);
        let mut pos = (start * bits as usize) as u64;
        let mut rest = &mut out[..];
        if bits <= 14 {
            // 4 · 14 + 7 ≤ 64: the window holds four whole codes.
            let mut quads = rest.chunks_exact_mut(4);
            for q in &mut quads {
                let w = window(self.bytes, pos);
                q[0] = (w & mask) as u32;
                q[1] = ((w >> bits) & mask) as u32;
                q[2] = ((w >> (2 * bits)) & mask) as u32;
                q[3] = ((w >> (3 * bits)) & mask) as u32;
                pos += 4 * bits as u64;
            }
            rest = quads.into_remainder();
        }
        for o in rest {
            *o = (window(self.bytes, pos) & mask) as u32;
            pos += bits as u64;
        }
    }
}

/// Why a Rice-coded list does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListError {
    /// The last code runs past the end of the list (the next list's offset).
    Overrun,
    /// A document number does not fit in 32 bits.
    Overflow,
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListError::Overrun => "its last code runs past the end of the list",
            ListError::Overflow => "it decodes to a document number above 2^32 - 1",
        })
    }
}

/// The Rice parameter that codes the strictly increasing `docs` in the fewest bits, with those
/// bits: the `k` minimising `Σ (v >> k) + n·(k + 1)` over the coded values `v`.
pub fn best_rice_param(docs: &[u32]) -> (u32, u64) {
    let values = || {
        docs.iter().scan(0u64, |next, &d| {
            let v = d as u64 - *next;
            *next = d as u64 + 1;
            Some(v)
        })
    };
    let n = docs.len() as u64;
    let cost = |k: u32| values().map(|v| v >> k).sum::<u64>() + n * (k as u64 + 1);
    // The cost is convex in k: walk up from a lower bound until it stops falling.
    let mut best = (0, cost(0));
    for k in 1..=MAX_RICE_PARAM {
        let c = cost(k);
        if c >= best.1 {
            break;
        }
        best = (k, c);
    }
    best
}

/// Appends the strictly increasing `docs` to `out` as one Rice-coded list with parameter `k`.
pub fn put_rice_list<W: Write>(out: &mut BitWriter<W>, docs: &[u32], k: u32) -> io::Result<()> {
    let mut next = 0u64;
    for &d in docs {
        debug_assert!(d as u64 >= next, "the list is not strictly increasing");
        out.put_rice(d as u64 - next, k)?;
        next = d as u64 + 1;
    }
    Ok(())
}

/// Reads the Rice code that starts at bit `*pos < end` and moves `*pos` past it.
#[inline(always)]
pub(crate) fn next_rice(bytes: &[u8], pos: &mut u64, end: u64, k: u32) -> Result<u64, ListError> {
    let w = window(bytes, *pos);
    let tz = w.trailing_zeros();
    if tz + 1 + k <= 57 {
        // The terminating one and the k low bits are inside the 57 valid bits of the window.
        *pos += (tz + 1 + k) as u64;
        return Ok(((tz as u64) << k) | ((w >> (tz + 1)) & ((1u64 << k) - 1)));
    }
    next_rice_long(bytes, pos, end, k)
}

/// [`next_rice`] for a code that does not fit in one window: skips zeros 57 bits at a time,
/// never reading at or past `end`.
#[cold]
fn next_rice_long(bytes: &[u8], pos: &mut u64, end: u64, k: u32) -> Result<u64, ListError> {
    let mut q = 0u64;
    loop {
        if *pos >= end {
            return Err(ListError::Overrun);
        }
        let w = window(bytes, *pos) & ((1u64 << 57) - 1);
        if w == 0 {
            q += 57;
            *pos += 57;
            continue;
        }
        let tz = w.trailing_zeros() as u64;
        q += tz;
        *pos += tz + 1;
        break;
    }
    if *pos + k as u64 > end {
        return Err(ListError::Overrun);
    }
    if q > u32::MAX as u64 {
        return Err(ListError::Overflow);
    }
    let low = if k == 0 { 0 } else { window(bytes, *pos) & ((1u64 << k) - 1) };
    *pos += k as u64;
    Ok((q << k) | low)
}

/// Decodes the Rice-coded list in bits `start .. end` of `bytes` with parameter `k ≤ 32`,
/// appending its documents to `out`. On error `out` may hold part of the list.
///
/// `bytes` must hold the stream with its padding word and `end` must not exceed the stream's
/// length (checked when the index is opened); then no read is out of bounds, whatever the bits.
///
/// Codes are taken from a 57-bit window held in a register: each costs a count of trailing
/// zeros and a shift, and memory is read once per window, not once per code.
#[inline]
pub fn decode_rice_list(
    bytes: &[u8],
    start: u64,
    end: u64,
    k: u32,
    out: &mut Vec<u32>,
) -> Result<(), ListError> {
    debug_assert!(k <= MAX_RICE_PARAM && start <= end);
    let mask = (1u64 << k) - 1;
    // Every code takes at least k + 1 bits.
    out.reserve(((end - start) / (k as u64 + 1)) as usize);
    let mut pos = start;
    let mut next = 0u64;
    while pos < end {
        let mut buf = window(bytes, pos);
        let mut avail = 57;
        let mut decoded = false;
        loop {
            // Zeros shifted in at the top make `tz` run past `avail`: then the code is not whole.
            let tz = buf.trailing_zeros();
            let used = tz + 1 + k;
            if used > avail {
                break;
            }
            let doc = next.saturating_add(((tz as u64) << k) | ((buf >> (tz + 1)) & mask));
            out.push(doc as u32);
            next = doc.saturating_add(1);
            buf >>= used;
            avail -= used;
            pos += used as u64;
            decoded = true;
            if pos >= end {
                break;
            }
        }
        if !decoded && pos < end {
            // A code longer than a window.
            let doc = next.saturating_add(next_rice_long(bytes, &mut pos, end, k)?);
            out.push(doc as u32);
            next = doc.saturating_add(1);
        }
    }
    if pos != end {
        return Err(ListError::Overrun);
    }
    if next > 1 << 32 {
        return Err(ListError::Overflow);
    }
    Ok(())
}

/// A position inside one Rice-coded list, to read it one document at a time
/// ([`RiceLists::advance`]).
#[derive(Debug, Clone, Copy)]
pub struct RiceCursor {
    pos: u64,
    end: u64,
    k: u32,
    next: u64,
}

/// The Rice-coded inverted file of format v3: `C` lists located by `C + 1` bit offsets, each
/// with its Rice parameter.
#[derive(Debug, Clone, Copy)]
pub struct RiceLists<'a> {
    offsets: &'a [u64],
    params: &'a [u8],
    bytes: &'a [u8],
}

/// Why the arrays of a Rice-coded inverted file do not fit together (see [`RiceLists::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiceShapeError {
    /// `offsets` does not hold one more entry than `params`.
    Counts {
        /// Entries in the bit offsets.
        offsets: usize,
        /// Entries in the parameters.
        params: usize,
    },
    /// The offsets do not start at 0 or decrease (at this list).
    Offsets(usize),
    /// The stream's size is not what the last offset implies.
    Length {
        /// Bytes in the stream.
        bytes: u64,
        /// Bits the last offset says the lists take.
        bits: u64,
    },
    /// A Rice parameter above [`MAX_RICE_PARAM`] (at this list).
    Param(usize, u8),
}

impl<'a> RiceLists<'a> {
    /// Views the lists, checking that the offsets start at 0, never decrease and end exactly
    /// where the stream does (before its padding word), and that every parameter is at most
    /// [`MAX_RICE_PARAM`]. These checks make every decode memory-safe and panic-free; the
    /// contents are checked by decoding ([`RiceLists::decode_into`]).
    pub fn new(offsets: &'a [u64], params: &'a [u8], bytes: &'a [u8]) -> Result<Self, RiceShapeError> {
        if offsets.len() != params.len() + 1 {
            return Err(RiceShapeError::Counts { offsets: offsets.len(), params: params.len() });
        }
        if offsets[0] != 0 {
            return Err(RiceShapeError::Offsets(0));
        }
        if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1]) {
            return Err(RiceShapeError::Offsets(i));
        }
        let bits = offsets[offsets.len() - 1];
        if bytes.len() as u64 != 8 * packed_words(bits) {
            return Err(RiceShapeError::Length { bytes: bytes.len() as u64, bits });
        }
        if let Some(i) = params.iter().position(|&k| k as u32 > MAX_RICE_PARAM) {
            return Err(RiceShapeError::Param(i, params[i]));
        }
        Ok(Self { offsets, params, bytes })
    }

    /// Number of lists.
    pub fn n_lists(&self) -> usize {
        self.params.len()
    }

    /// The stream, padding word included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Total bits of the lists (without padding).
    pub fn total_bits(&self) -> u64 {
        self.offsets[self.offsets.len() - 1]
    }

    /// Appends the documents of list `c` to `out`.
    #[inline]
    pub fn decode_into(&self, c: usize, out: &mut Vec<u32>) -> Result<(), ListError> {
        decode_rice_list(self.bytes, self.offsets[c], self.offsets[c + 1], self.params[c] as u32, out)
    }

    /// A cursor at the start of list `c`.
    pub fn cursor(&self, c: usize) -> RiceCursor {
        RiceCursor { pos: self.offsets[c], end: self.offsets[c + 1], k: self.params[c] as u32, next: 0 }
    }

    /// The next document of the cursor's list, `None` at its end.
    pub fn advance(&self, cur: &mut RiceCursor) -> Option<Result<u32, ListError>> {
        if cur.pos >= cur.end {
            return None;
        }
        let doc = match next_rice(self.bytes, &mut cur.pos, cur.end, cur.k) {
            Ok(v) => cur.next.saturating_add(v),
            Err(e) => {
                cur.pos = cur.end;
                return Some(Err(e));
            }
        };
        if cur.pos > cur.end || doc > u32::MAX as u64 {
            let e = if doc > u32::MAX as u64 { ListError::Overflow } else { ListError::Overrun };
            cur.pos = cur.end;
            return Some(Err(e));
        }
        cur.next = doc + 1;
        Some(Ok(doc as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(values: &[(u64, u32)]) -> Vec<u8> {
        let mut w = BitWriter::new(Vec::new());
        for &(v, b) in values {
            w.put(v, b).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn code_bits_is_ceil_log2_at_least_one() {
        let cases = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8192, 13), (8193, 14), (65536, 16)];
        for (c, b) in cases {
            assert_eq!(code_bits(c), b, "{c}");
        }
        assert_eq!(code_bits(1 << 32), 32);
    }

    #[test]
    fn writer_pads_with_one_zero_word() {
        assert_eq!(pack(&[]), vec![0; 8]);
        assert_eq!(pack(&[(1, 1)]).len(), 16);
        assert_eq!(pack(&[(u64::MAX, 64)]).len(), 16);
        assert_eq!(pack(&[(u64::MAX, 64), (1, 1)]).len(), 24);
        let b = pack(&[(0b101, 3), (0x1ff, 9)]);
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 0b1111_1111_1101);
    }

    #[test]
    fn padding_bits_are_checked() {
        let mut b = pack(&[(0b1011, 4)]);
        assert!(padding_is_zero(&b, 4));
        assert!(!padding_is_zero(&b, 3));
        b[15] = 1;
        assert!(!padding_is_zero(&b, 4));
        assert!(padding_is_zero(&b, 128));
    }

    #[test]
    fn bad_shapes_are_refused() {
        let bytes = pack(&[(1, 7)]);
        assert!(PackedCodes::new(&bytes, 7, 1).is_some());
        assert!(PackedCodes::new(&bytes, 7, 10).is_none());
        assert!(PackedCodes::new(&bytes[..8], 7, 1).is_none());
        assert!(PackedCodes::new(&bytes, 33, 1).is_none());
        assert!(PackedCodes::new(&bytes, 0, 0).is_none());
        assert!(RiceLists::new(&[0, 7], &[0], &bytes).is_ok());
        assert_eq!(RiceLists::new(&[0, 7], &[33], &bytes).unwrap_err(), RiceShapeError::Param(0, 33));
        assert_eq!(
            RiceLists::new(&[0, 65], &[0], &bytes).unwrap_err(),
            RiceShapeError::Length { bytes: 16, bits: 65 }
        );
        assert_eq!(RiceLists::new(&[1, 7], &[0], &bytes).unwrap_err(), RiceShapeError::Offsets(0));
        assert_eq!(RiceLists::new(&[0, 7, 3], &[0, 0], &bytes).unwrap_err(), RiceShapeError::Offsets(1));
        assert!(matches!(RiceLists::new(&[0, 7], &[], &bytes), Err(RiceShapeError::Counts { .. })));
    }

    #[test]
    fn malformed_lists_are_errors_not_panics() {
        // A unary run that never terminates inside its list.
        let bytes = pack(&[(0, 64), (0, 64), (1, 1)]);
        let mut out = Vec::new();
        assert_eq!(decode_rice_list(&bytes, 0, 128, 0, &mut out), Err(ListError::Overrun));
        // A code whose low bits cross the end of the list.
        let bytes = pack(&[(1, 1), (0, 3)]);
        assert_eq!(decode_rice_list(&bytes, 0, 2, 4, &mut out), Err(ListError::Overrun));
        // Documents that add up past 2^32 - 1.
        let mut w = BitWriter::new(Vec::new());
        w.put_rice(u32::MAX as u64, 32).unwrap();
        w.put_rice(5, 32).unwrap();
        let bits = w.bits();
        let bytes = w.finish().unwrap();
        out.clear();
        assert_eq!(decode_rice_list(&bytes, 0, bits, 32, &mut out), Err(ListError::Overflow));
        // Every bit pattern of a few words decodes or fails cleanly.
        let mut rng = 0x1234_5678_9abc_def1u64;
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let words = [rng, rng.rotate_left(17) & rng, 0];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let end = rng % 129;
            out.clear();
            let _ = decode_rice_list(&bytes, 0, end, (rng >> 60) as u32 * 2, &mut out);
        }
    }

    #[test]
    fn long_unary_runs_decode() {
        for (docs, k) in [
            (vec![1000u32, 1001, 5000], 0),
            (vec![0, 70, 71], 1),
            (vec![u32::MAX], 32),
            (vec![u32::MAX - 1, u32::MAX], 30),
        ] {
            let mut w = BitWriter::new(Vec::new());
            put_rice_list(&mut w, &docs, k).unwrap();
            let bits = w.bits();
            let bytes = w.finish().unwrap();
            let mut out = Vec::new();
            decode_rice_list(&bytes, 0, bits, k, &mut out).unwrap();
            assert_eq!(out, docs);
        }
    }

    proptest! {
        #[test]
        fn codes_round_trip(bits in 1u32..=32, raw in proptest::collection::vec(any::<u32>(), 0..300)) {
            let mask = if bits == 32 { u32::MAX } else { (1 << bits) - 1 };
            let codes: Vec<u32> = raw.iter().map(|c| c & mask).collect();
            let bytes = pack(&codes.iter().map(|&c| (c as u64, bits)).collect::<Vec<_>>());
            let packed = PackedCodes::new(&bytes, bits, codes.len()).unwrap();
            for (t, &c) in codes.iter().enumerate() {
                prop_assert_eq!(packed.get(t), c);
            }
            let start = codes.len() / 3;
            let mut out = vec![0; codes.len() - start];
            packed.decode_into(start, &mut out);
            prop_assert_eq!(&out[..], &codes[start..]);
        }

        #[test]
        fn rice_lists_round_trip(
            lists in proptest::collection::vec(
                (proptest::collection::btree_set(any::<u32>(), 0..40),
                 proptest::collection::btree_set(0u32..200, 0..40),
                 0u32..3),
                0..12),
            forced in proptest::option::of(-3i32..=32),
        ) {
            // Sparse lists over all of u32, dense ones near 0, and unions of both.
            let lists: Vec<Vec<u32>> = lists
                .into_iter()
                .map(|(sparse, dense, pick)| match pick {
                    0 => sparse.into_iter().collect(),
                    1 => dense.into_iter().collect(),
                    _ => sparse.union(&dense).copied().collect(),
                })
                .collect();
            let mut w = BitWriter::new(Vec::new());
            let mut offsets = vec![0u64];
            let mut params = Vec::new();
            for l in &lists {
                let (best, cost) = best_rice_param(l);
                let k = forced.map_or(best, |d| (best as i32 + d).clamp(0, 32) as u32);
                put_rice_list(&mut w, l, k).unwrap();
                if forced.is_none() {
                    prop_assert_eq!(w.bits() - offsets.last().unwrap(), cost);
                }
                offsets.push(w.bits());
                params.push(k as u8);
            }
            let bytes = w.finish().unwrap();
            let ivf = RiceLists::new(&offsets, &params, &bytes).unwrap();
            let mut out = Vec::new();
            for (c, l) in lists.iter().enumerate() {
                out.clear();
                ivf.decode_into(c, &mut out).unwrap();
                prop_assert_eq!(&out, l);
                let mut cur = ivf.cursor(c);
                let stepped: Vec<u32> = std::iter::from_fn(|| ivf.advance(&mut cur)).map(Result::unwrap).collect();
                prop_assert_eq!(&stepped, l);
            }
        }
    }
}
