//! Where the AVX-512 micro-kernels ([`super::packed`], [`super::bf16`]) put a block of results:
//! up to 32 columns of a few output rows, written (or added) straight from the accumulator
//! registers, with masked stores for a narrower last panel.

use std::arch::x86_64::*;

/// A block of output rows: `rows` rows of `width ≤ 32` floats, row `r` at `out[r * stride]`.
pub(crate) struct Dst<'a> {
    out: &'a mut [f32],
    stride: usize,
    /// Rows in the block.
    pub rows: usize,
    width: usize,
    accumulate: bool,
}

impl<'a> Dst<'a> {
    /// The block at the start of `out`; panics if it does not fit (an internal invariant).
    pub(crate) fn new(
        out: &'a mut [f32],
        stride: usize,
        rows: usize,
        width: usize,
        accumulate: bool,
    ) -> Self {
        assert!(width <= 32 && width <= stride, "output block of {width} columns");
        assert!(rows == 0 || (rows - 1) * stride + width <= out.len(), "output block out of bounds");
        Dst { out, stride, rows, width, accumulate }
    }

    /// Writes (or adds) `acc[2r]` (columns 0..16) and `acc[2r + 1]` (16..32) to row `r`.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn store(self, acc: &[__m512]) {
        assert!(acc.len() >= 2 * self.rows);
        let lo: __mmask16 = if self.width >= 16 { 0xffff } else { (1u16 << self.width) - 1 };
        let hi: __mmask16 =
            if self.width > 16 { (((1u32 << (self.width - 16)) - 1) & 0xffff) as u16 } else { 0 };
        for r in 0..self.rows {
            // SAFETY: row `r < rows` starts at `r * stride` and its `width` columns are inside
            // `out` (checked in `new`); the masks enable exactly those columns, and masked-off
            // lanes are neither read nor written (`wrapping_add`: with `width ≤ 16` the second
            // half may point past the slice, and is then fully masked).
            unsafe {
                let p = self.out.as_mut_ptr().add(r * self.stride);
                let (mut v0, mut v1) = (acc[2 * r], acc[2 * r + 1]);
                if self.accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, p));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, p.wrapping_add(16)));
                }
                _mm512_mask_storeu_ps(p, lo, v0);
                _mm512_mask_storeu_ps(p.wrapping_add(16), hi, v1);
            }
        }
    }
}
