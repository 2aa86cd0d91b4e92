//! A bf16 matrix product for the dense layers, on CPUs with AVX-512 BF16 (`vdpbf16ps`: Zen 4,
//! Sapphire Rapids, Cooper Lake), where it runs at twice the f32 FMA rate.
//!
//! `out (+)= A · W`: `A` is f32 activations, rounded to bf16 (round to nearest even) one row
//! block at a time; `W` is packed once at load; products accumulate in f32. Each `vdpbf16ps`
//! multiplies pairs of consecutive `k`, so `W` is stored as panels of [`NR`] output columns, and
//! within a panel, for every pair `(k, k+1)`, the 32 columns' two values interleaved:
//! `panel[kp][n][2]`. The micro-kernel holds an `MR × NR` block of `out` in 24 registers, and
//! for each pair broadcasts one `(a[k], a[k+1])` dword per row against two panel vectors.
//!
//! Rounding the inputs to bf16 (8 significant bits) perturbs each product by up to 2⁻⁸
//! relatively; encoded embeddings then differ from f32 ones by about 1e-3 in cosine terms. The
//! encoder uses this path only when asked (`Precision::Bf16`), and the f32 path stays the
//! reference the fixtures check.

use std::ops::Range;

pub mod amx;

use crate::detect::Isa;

use Bf16Dense as Kernel;

/// The bf16 dense matrix product (inputs rounded to bf16, f32 sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Dense {
    /// `vdpbf16ps` on AVX-512 registers.
    Avx512,
    /// `tdpbf16ps` on AMX tiles.
    Amx,
}

/// Output columns per packed panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per micro-kernel call.
const MR: usize = 12;
/// Rows of `A` converted and kept hot per block.
const MC: usize = 96;
/// Pairs of `k` per pass over a panel: a 24 KiB slice of it, which stays in L1 across the row
/// blocks, and a whole 384-wide input (MiniLM, BERT-small) in one pass.
const KC: usize = 192;

/// Whether this CPU (and build) runs the bf16 kernels: AVX-512 BF16 was detected.
pub fn available() -> bool {
    Isa::get().avx512_bf16
}

/// Pairs of `k` in one AMX tile row (64 bytes), the granule of [`PackedB::ks`].
pub const TILE_PAIRS: usize = 16;

/// Pairs stored per panel for an input `k` wide: `ceil(k / 2)` rounded up to [`TILE_PAIRS`].
fn stored_pairs(k: usize) -> usize {
    k.div_ceil(2).div_ceil(TILE_PAIRS) * TILE_PAIRS
}

/// f32 → bf16 bits, round to nearest even (what `vcvtne2ps2bf16` does; inputs are finite).
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// A weight matrix `[k, n]` packed for the kernel.
#[derive(Default)]
pub struct PackedB {
    k: usize,
    /// Columns of the matrix.
    pub n: usize,
    /// `ceil(k / 2)` pairs.
    kp: usize,
    /// Pairs stored per panel: `kp` rounded up to [`TILE_PAIRS`] (zeros past `kp`), so that the
    /// AMX kernel reads whole tiles.
    pub ks: usize,
    /// Panels of `ks × NR × 2` bf16 bits, each stored as u32 pairs (low half = even `k`).
    pub data: Vec<u32>,
    /// Rounded source rows while attention repacks a head (kept to reuse the allocation).
    scratch: Vec<u32>,
}

impl PackedB {
    /// Packs `w`, `[k, n]` row-major f32.
    pub fn pack(w: &[f32], k: usize, n: usize) -> PackedB {
        assert_eq!(w.len(), k * n);
        let mut packed = PackedB::default();
        packed.repack(k, n, |row, col| w[row * n + col]);
        packed
    }

    /// Repacks in place (reusing the allocation) a `[k, n]` matrix whose element `(row, col)` is
    /// `at(row, col)`: how attention packs `Kᵀ` and `V` of each head without copying them first.
    pub fn repack(&mut self, k: usize, n: usize, at: impl Fn(usize, usize) -> f32) {
        let (kp, ks) = (k.div_ceil(2), stored_pairs(k));
        let panels = n.div_ceil(NR);
        self.data.clear();
        self.data.resize(panels * ks * NR, 0);
        for p in 0..panels {
            let width = NR.min(n - p * NR);
            for pair in 0..kp {
                let dst = &mut self.data[(p * ks + pair) * NR..][..width];
                for (c, slot) in dst.iter_mut().enumerate() {
                    let col = p * NR + c;
                    let lo = to_bf16(at(2 * pair, col));
                    let hi = if 2 * pair + 1 < k { to_bf16(at(2 * pair + 1, col)) } else { 0 };
                    *slot = u32::from(lo) | (u32::from(hi) << 16);
                }
            }
        }
        (self.k, self.n, self.kp, self.ks) = (k, n, kp, ks);
    }
}

impl PackedB {
    /// [`Self::repack`] of `srcᵀ · scale`: `src` holds `n` rows of `k` values, row `c` at
    /// `src[c * stride]` (attention's keys, read in place from the `Q | K | V` rows). Each row is
    /// scaled, rounded with the vector path of [`pack_rows`] and its pairs scattered to the
    /// panels, instead of gathering one element at a time down the rows.
    pub fn repack_transposed(&mut self, src: &[f32], stride: usize, n: usize, k: usize, scale: f32) {
        let (kp, ks) = (k.div_ceil(2), stored_pairs(k));
        let mut rows = std::mem::take(&mut self.scratch);
        pack_rows(src, stride, n, k, kp, scale, &mut rows);
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * ks * NR, 0);
        for (c, row) in rows.chunks_exact(kp).enumerate() {
            let (panel, col) = (c / NR, c % NR);
            for (pair, &v) in row.iter().enumerate() {
                self.data[(panel * ks + pair) * NR + col] = v;
            }
        }
        (self.k, self.n, self.kp, self.ks, self.scratch) = (k, n, kp, ks, rows);
    }

    /// [`Self::repack`] of `src` itself: `k` rows of `n` values, row `r` at `src[r * stride]`
    /// (attention's values). Rows are rounded with the vector path of [`pack_rows`], then each
    /// pair of rows is interleaved into the panels.
    pub fn repack_rows(&mut self, src: &[f32], stride: usize, k: usize, n: usize) {
        let (kp, ks, np) = (k.div_ceil(2), stored_pairs(k), n.div_ceil(2));
        let mut rows = std::mem::take(&mut self.scratch);
        pack_rows(src, stride, k, n, np, 1.0, &mut rows);
        // Row `r`'s bf16 value of column `c`: half `c % 2` of its dword `c / 2`.
        let at = |r: usize, c: usize| (rows[r * np + c / 2] >> (16 * (c % 2))) & 0xffff;
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * ks * NR, 0);
        for (panel, chunk) in self.data.chunks_exact_mut(ks * NR).enumerate() {
            let width = NR.min(n - panel * NR);
            for (pair, dst) in chunk.chunks_exact_mut(NR).take(kp).enumerate() {
                for (j, slot) in dst[..width].iter_mut().enumerate() {
                    let c = panel * NR + j;
                    let hi = if 2 * pair + 1 < k { at(2 * pair + 1, c) } else { 0 };
                    *slot = at(2 * pair, c) | (hi << 16);
                }
            }
        }
        (self.k, self.n, self.kp, self.ks, self.scratch) = (k, n, kp, ks, rows);
    }
}

/// `out (+)= a · b`: `a` is `[m, b.k()]` row-major, `out` `[m, b.n()]` row-major.
/// Call only when [`available`] is true (checked: panics otherwise, an internal invariant).
pub fn matmul(kernel: Kernel, a: &[f32], m: usize, b: &PackedB, out: &mut [f32], accumulate: bool) {
    assert_eq!(a.len(), m * b.k, "bf16 matmul: lhs shape");
    assert_eq!(out.len(), m * b.n, "bf16 matmul: output shape");
    matmul_strided(kernel, a, b.k, m, b, out, b.n, accumulate);
}

/// [`matmul`] on strided rows: row `i` of `a` starts at `a[i * a_stride]` and row `i` of `out`
/// at `out[i * out_stride]` (how attention reads one head of the `Q | K | V` rows and writes its
/// slice of the context).
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided(
    kernel: Kernel,
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &PackedB,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    matmul_with(kernel, a, a_stride, m, b, 0..b.n.div_ceil(NR), out, out_stride, accumulate);
}

/// [`matmul_strided`] on the columns of `b`'s panels `panels` only (`NR` columns each, the last
/// one possibly narrower): column `panels.start * NR` of `b` lands in column 0 of `out`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_panel_range(
    kernel: Kernel,
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &PackedB,
    panels: Range<usize>,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    matmul_with(kernel, a, a_stride, m, b, panels, out, out_stride, accumulate);
}

/// [`matmul_panel_range`] with the given kernel.
#[allow(clippy::too_many_arguments)]
fn matmul_with(
    kernel: Kernel,
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &PackedB,
    panels: Range<usize>,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    assert!(available(), "bf16 kernel called on a CPU without AVX-512 BF16");
    assert!(panels.end <= b.n.div_ceil(NR), "bf16 matmul: panel range out of bounds");
    let cols = b.n.min(panels.end * NR).saturating_sub(panels.start * NR);
    assert!(a_stride >= b.k && out_stride >= cols, "bf16 matmul: stride below the width");
    if m == 0 || cols == 0 {
        return;
    }
    assert!((m - 1) * a_stride + b.k <= a.len(), "bf16 matmul: lhs out of bounds");
    assert!((m - 1) * out_stride + cols <= out.len(), "bf16 matmul: output out of bounds");
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` confirmed AVX-512F and AVX-512 BF16 at run time.
        Kernel::Avx512 => unsafe { x86::matmul(a, a_stride, m, b, panels, out, out_stride, accumulate) },
        Kernel::Amx => matmul_amx(a, a_stride, m, b, panels, out, out_stride, accumulate),
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx512 => unreachable!("AVX-512 BF16 reported on a non-x86 target"),
    }
}

/// [`matmul_with`] on the AMX tiles: row blocks of [`MC`] rounded and padded to whole tiles.
#[allow(clippy::too_many_arguments)]
fn matmul_amx(
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &PackedB,
    panels: Range<usize>,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    let mut hw = amx::Hardware::new().expect("the AMX kernel chosen where the tiles are not usable");
    let mut ablock = ABLOCK.take();
    for m0 in (0..m).step_by(MC) {
        let mc = MC.min(m - m0);
        pack_padded(&a[m0 * a_stride..], a_stride, mc, b.k, b.ks, &mut ablock);
        let out = &mut out[m0 * out_stride..];
        amx::row_block_panels(&mut hw, &ablock, mc, b, panels.clone(), out, out_stride, accumulate);
    }
    ABLOCK.set(ablock);
}

thread_local! {
    /// Rows of `A` rounded to bf16 pairs, grown to the largest block seen on this thread
    /// (attention calls the products per head and sequence).
    static ABLOCK: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Rounds `rows` rows of `a` (`k` wide, row `i` at `a[i * stride]`) for the AMX kernel: rows of
/// `width ≥ ceil(k / 2)` pairs, their count rounded up to whole tiles, zeros in the padding.
pub fn pack_padded(a: &[f32], stride: usize, rows: usize, k: usize, width: usize, dst: &mut Vec<u32>) {
    let total = rows.div_ceil(TILE_PAIRS) * TILE_PAIRS;
    pack_rows_into(a, stride, rows, k, width, total, 1.0, dst);
}

/// A fixed left-hand matrix `[rows, k]` rounded to bf16 pairs once, for repeated products
/// against small right-hand sides: how search keeps its centroids for the stage-1 scores `C·Qᵀ`.
/// Stored as [`pack_padded`] lays rows out (`stored_pairs(k)` u32 per row, rows rounded up to
/// whole tiles, zeros in the padding), which both kernels read.
#[derive(Debug, Default)]
pub struct PackedRows {
    rows: usize,
    k: usize,
    data: Vec<u32>,
}

impl PackedRows {
    /// Rounds `a`, `[rows, k]` row-major f32.
    pub fn pack(a: &[f32], rows: usize, k: usize) -> PackedRows {
        assert_eq!(a.len(), rows * k, "bf16 rows: shape");
        let mut data = Vec::new();
        pack_padded(a, k, rows, k, stored_pairs(k), &mut data);
        PackedRows { rows, k, data }
    }

    /// Rows `rows` as the kernels read them (`ks` u32 per row): the AMX kernel reads whole tiles
    /// of rows, so the slice runs past `rows.end` to the next multiple of a tile from
    /// `rows.start`, as far as the padding the rows were stored with (rows of a next range, if
    /// any, are read but not written out).
    fn tile_rows(&self, rows: Range<usize>, ks: usize) -> &[u32] {
        let stored = self.data.len() / ks.max(1);
        let end = (rows.start + rows.len().div_ceil(TILE_PAIRS) * TILE_PAIRS).min(stored).max(rows.end);
        &self.data[rows.start * ks..end * ks]
    }
}

/// `out = a · b` for pre-rounded rows `a` (`[a.rows, b.k]`); `out` is `[a.rows, b.n]` row-major.
/// Call only when [`available`] is true (checked: panics otherwise, an internal invariant).
pub fn matmul_rows(kernel: Kernel, a: &PackedRows, b: &PackedB, out: &mut [f32]) {
    matmul_row_range(kernel, a, 0..a.rows, b, out);
}

/// [`matmul_rows`] for rows `rows` of `a` only: `out` is `[rows.len(), b.n]`. Each output row is
/// computed exactly as [`matmul_rows`] computes it when `rows.start` is a multiple of
/// [`ROW_GRANULE`], so callers can split a product across threads without changing a bit.
pub fn matmul_row_range(kernel: Kernel, a: &PackedRows, rows: Range<usize>, b: &PackedB, out: &mut [f32]) {
    assert!(available(), "bf16 kernel called on a CPU without AVX-512 BF16");
    assert_eq!(a.k, b.k, "bf16 matmul: inner dimensions");
    assert!(rows.start <= rows.end && rows.end <= a.rows, "bf16 matmul: row range out of bounds");
    let m = rows.len();
    assert_eq!(out.len(), m * b.n, "bf16 matmul: output shape");
    let data = a.tile_rows(rows, b.ks);
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` confirmed AVX-512F and AVX-512 BF16 at run time.
        Kernel::Avx512 => unsafe { x86::matmul_rows(data, m, b, out) },
        Kernel::Amx => {
            let mut hw = amx::Hardware::new().expect("the AMX kernel chosen where the tiles are not usable");
            amx::row_block(&mut hw, data, m, b, out, b.n, false);
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx512 => unreachable!("AVX-512 BF16 reported on a non-x86 target"),
    }
}

/// Row counts at which [`matmul_row_range`] may split a product: a multiple of every kernel's
/// row block (96 rows for AVX-512 BF16, 32 for the AMX tiles).
pub const ROW_GRANULE: usize = MC;

/// Rounds `rows` rows of `a` (`k` wide, row `i` at `a[i * stride]`), each value multiplied by
/// `scale` first, to bf16 pairs (`kp` u32 per row, odd `k` zero-padded): with `vcvtneps2bf16`
/// where the kernel runs, else [`pack_rows_portable`].
fn pack_rows(a: &[f32], stride: usize, rows: usize, k: usize, kp: usize, scale: f32, dst: &mut Vec<u32>) {
    assert_eq!(kp, k.div_ceil(2), "bf16 rows: pairs");
    pack_rows_into(a, stride, rows, k, kp, rows, scale, dst);
}

/// [`pack_rows`] into `total_rows ≥ rows` rows of `width ≥ ceil(k / 2)` u32 each, zeros past the
/// pairs and below the rows: the whole tiles the AMX kernel reads.
#[allow(clippy::too_many_arguments)]
fn pack_rows_into(
    a: &[f32],
    stride: usize,
    rows: usize,
    k: usize,
    width: usize,
    total_rows: usize,
    scale: f32,
    dst: &mut Vec<u32>,
) {
    assert!(width >= k.div_ceil(2) && total_rows >= rows, "bf16 rows: padded shape");
    assert!(rows == 0 || (rows - 1) * stride + k <= a.len(), "bf16 rows: lhs out of bounds");
    dst.clear();
    dst.resize(total_rows * width, 0);
    let dst = &mut dst[..rows * width];
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `available()` confirmed AVX-512F, VL and BF16 at run time.
        unsafe { x86::pack_rows(a, stride, k, width, scale, dst) };
        return;
    }
    pack_rows_portable(a, stride, k, width, scale, dst);
}

/// [`pack_rows`] one element at a time into rows of `width` u32 (`dst` already sized and
/// zeroed): the reference of the vector path (they agree on every finite input whose bf16
/// rounding is not subnormal, which `vcvtneps2bf16` flushes to zero).
fn pack_rows_portable(a: &[f32], stride: usize, k: usize, width: usize, scale: f32, dst: &mut [u32]) {
    for (r, d) in dst.chunks_exact_mut(width).enumerate() {
        let src = &a[r * stride..][..k];
        for (pair, slot) in d[..k.div_ceil(2)].iter_mut().enumerate() {
            let lo = to_bf16(src[2 * pair] * scale);
            let hi = if 2 * pair + 1 < k { to_bf16(src[2 * pair + 1] * scale) } else { 0 };
            *slot = u32::from(lo) | (u32::from(hi) << 16);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PackedB, Range, KC, MC, MR, NR};
    use crate::tile::Dst;

    /// [`super::pack_rows_portable`] with `vcvtneps2bf16`: the pairs of a row are its bf16 values
    /// in order (low half first), so each 16 floats round to 8 dwords; a masked load zero-pads
    /// odd `k`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bf16")]
    pub fn pack_rows(a: &[f32], stride: usize, k: usize, width: usize, scale: f32, dst: &mut [u32]) {
        let scale = _mm512_set1_ps(scale);
        for (r, d) in dst.chunks_exact_mut(width).enumerate() {
            let src = &a[r * stride..][..k];
            let (mut src, mut d) = (src, &mut d[..k.div_ceil(2)]);
            while src.len() >= 16 {
                // SAFETY: 16 floats are read from `src` and 8 dwords written to `d`, which holds
                // `ceil(len / 2) ≥ 8` of them while `len ≥ 16`.
                unsafe {
                    let v = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(src.as_ptr()), scale));
                    _mm256_storeu_si256(
                        d.as_mut_ptr() as *mut __m256i,
                        std::mem::transmute::<__m256bh, __m256i>(v),
                    );
                }
                (src, d) = (&src[16..], &mut d[8..]);
            }
            if !src.is_empty() {
                let load: __mmask16 = (1u16 << src.len()) - 1;
                let store = ((1u16 << d.len()) - 1) as __mmask8;
                // SAFETY: the masks enable exactly the `len < 16` floats left in `src` and the
                // `ceil(len / 2) ≤ 8` dwords left in `d`; masked-off lanes are not accessed.
                unsafe {
                    let v =
                        _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(load, src.as_ptr()), scale));
                    let v = std::mem::transmute::<__m256bh, __m256i>(v);
                    _mm256_mask_storeu_epi32(d.as_mut_ptr() as *mut i32, store, v);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        a: &[f32],
        a_stride: usize,
        m: usize,
        b: &PackedB,
        panels: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
        accumulate: bool,
    ) {
        let (k, kp) = (b.k, b.kp);
        let mut ablock = super::ABLOCK.take();
        for m0 in (0..m).step_by(MC) {
            let mc = MC.min(m - m0);
            super::pack_rows(&a[m0 * a_stride..], a_stride, mc, k, kp, 1.0, &mut ablock);
            let out = &mut out[m0 * out_stride..];
            row_block(&ablock, kp, mc, b, panels.clone(), out, out_stride, accumulate);
        }
        super::ABLOCK.set(ablock);
    }

    /// [`super::matmul_row_range`]: [`matmul`] over `rows` rows already rounded (`data`).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub fn matmul_rows(data: &[u32], rows: usize, b: &PackedB, out: &mut [f32]) {
        let (n, ks) = (b.n, b.ks);
        for m0 in (0..rows).step_by(MC) {
            let mc = MC.min(rows - m0);
            let all = 0..n.div_ceil(NR);
            row_block(&data[m0 * ks..(m0 + mc) * ks], ks, mc, b, all, &mut out[m0 * n..], n, false);
        }
    }

    /// `out (+)= ablock · b` for one block of `mc` rounded rows (`b.kp` pairs each, row `i` at
    /// `ablock[i * a_stride]`) and `b`'s panels `panels`; row `i` of `out` at
    /// `out[i * out_stride]`, its column 0 the first column of panel `panels.start`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    fn row_block(
        ablock: &[u32],
        a_stride: usize,
        mc: usize,
        b: &PackedB,
        panels: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
        accumulate: bool,
    ) {
        let (n, kp) = (b.n, b.kp);
        let first = panels.start;
        // `KC` pairs at a time, so that a panel's slice stays in L1 across the row blocks.
        for k0 in (0..kp).step_by(KC) {
            let kc = KC.min(kp - k0);
            let add = accumulate || k0 > 0;
            for (p, panel) in b.data.chunks_exact(b.ks * NR).enumerate().take(panels.end).skip(first) {
                let n0 = p * NR;
                let width = NR.min(n - n0);
                let panel = &panel[k0 * NR..(k0 + kc) * NR];
                let c0 = n0 - first * NR;
                for r0 in (0..mc).step_by(MR) {
                    let rows = MR.min(mc - r0);
                    let dst = Dst::new(&mut out[r0 * out_stride + c0..], out_stride, rows, width, add);
                    kernel(&ablock[r0 * a_stride + k0..], a_stride, rows, kc, panel, dst);
                }
            }
        }
    }

    /// Reinterprets 16 dwords as 32 bf16 (the pairs were packed low half first).
    #[inline(always)]
    fn as_bh(v: __m512i) -> __m512bh {
        // SAFETY: both are plain 512-bit vectors; every bit pattern is a valid value of either.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// `tile[r][0..NR] = Σ_{pair < kc} a[r · stride + pair] · panel[pair]` for `rows ≤ MR` rows.
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn kernel(a: &[u32], stride: usize, rows: usize, kc: usize, panel: &[u32], dst: Dst<'_>) {
        assert!(rows <= MR && rows == dst.rows && kc <= stride && panel.len() >= kc * NR);
        assert!(rows == 0 || a.len() >= (rows - 1) * stride + kc);
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        let pp = panel.as_ptr();
        let ap = a.as_ptr();
        macro_rules! step {
            ($rows:expr) => {
                for pair in 0..kc {
                    // SAFETY: `pair < kc` and the asserts above bound both reads: the panel
                    // holds `kc * NR` u32, row `r` of `a` holds `kc` from `r * stride`.
                    let (b0, b1) = unsafe {
                        (
                            as_bh(_mm512_loadu_si512(pp.add(pair * NR) as *const __m512i)),
                            as_bh(_mm512_loadu_si512(pp.add(pair * NR + 16) as *const __m512i)),
                        )
                    };
                    for r in 0..$rows {
                        // SAFETY: `r < rows` and `pair < kc`, inside `a` (asserted above).
                        let av = as_bh(_mm512_set1_epi32(unsafe { *ap.add(r * stride + pair) } as i32));
                        acc[2 * r] = _mm512_dpbf16_ps(acc[2 * r], av, b0);
                        acc[2 * r + 1] = _mm512_dpbf16_ps(acc[2 * r + 1], av, b1);
                    }
                }
            };
        }
        // A constant row count lets the compiler keep the accumulators in registers (with a
        // variable one they live in memory, at a quarter of the speed): one loop per count.
        match rows {
            12 => step!(12),
            11 => step!(11),
            10 => step!(10),
            9 => step!(9),
            8 => step!(8),
            7 => step!(7),
            6 => step!(6),
            5 => step!(5),
            4 => step!(4),
            3 => step!(3),
            2 => step!(2),
            1 => step!(1),
            _ => {}
        }
        dst.store(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_the_definition() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to even (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
    }

    /// Deterministic `[m, k]` and `[k, n]` operands in [-0.5, 0.5).
    fn inputs(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..m * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect();
        let w = (0..k * n).map(|i| ((i * 104_729 % 997) as f32 / 997.0) - 0.5).collect();
        (a, w)
    }

    #[test]
    fn matmul_matches_f32_within_bf16_error() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        // Row counts across the MC blocking and MR remainders, odd k, several panels.
        for &(m, k, n) in &[(1, 1, 1), (13, 7, 33), (97, 384, 64), (200, 63, 40), (1000, 128, 70)] {
            let (a, w) = inputs(m, k, n);
            let packed = PackedB::pack(&w, k, n);
            let mut out = vec![0.25f32; m * n];
            matmul(Kernel::Avx512, &a, m, &packed, &mut out, true);
            // Rows rounded once ahead (search's centroids) give the very same product.
            let rows = PackedRows::pack(&a, m, k);
            assert_eq!((rows.rows, rows.data.len()), (m, m.div_ceil(16) * 16 * stored_pairs(k)));
            let (mut pre, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            matmul_rows(Kernel::Avx512, &rows, &packed, &mut pre);
            matmul(Kernel::Avx512, &a, m, &packed, &mut want, false);
            assert_eq!(pre, want, "({m},{k},{n}) pre-rounded rows");
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k).map(|t| a[i * k + t] as f64 * w[t * n + j] as f64).sum();
                    let mag: f64 = (0..k).map(|t| (a[i * k + t] as f64 * w[t * n + j] as f64).abs()).sum();
                    let got = out[i * n + j] as f64 - 0.25;
                    // Two bf16 roundings per product: ≤ 2·2⁻⁹ relative, plus f32 accumulation.
                    assert!(
                        (got - exact).abs() <= 4.5e-3 * mag + 1e-5,
                        "({m},{k},{n}) [{i},{j}] {got} vs {exact}"
                    );
                }
            }
        }
    }

    /// A range of rows that does not end on a tile (the last centroids of an index whose count is
    /// not a multiple of 16) still hands the tile kernel whole tiles: through the model, on any
    /// CPU, the ranges give the whole product bit for bit (this failed an assertion on AMX CPUs).
    #[test]
    fn row_ranges_hand_the_tile_kernel_whole_tiles() {
        for (m, k, n) in [(ROW_GRANULE * 3 + 17, 128, 32), (1000, 64, 16), (7, 40, 5)] {
            let (a, w) = inputs(m, k, n);
            let (rows, b) = (PackedRows::pack(&a, m, k), PackedB::pack(&w, k, n));
            let mut whole = vec![f32::NAN; m * n];
            amx::row_block(
                &mut amx::Model::default(),
                rows.tile_rows(0..m, b.ks),
                m,
                &b,
                &mut whole,
                n,
                false,
            );
            let mut split = vec![f32::NAN; m * n];
            for (i, out) in split.chunks_mut(ROW_GRANULE * n).enumerate() {
                let (start, len) = (i * ROW_GRANULE, out.len() / n);
                let data = rows.tile_rows(start..start + len, b.ks);
                amx::row_block(&mut amx::Model::default(), data, len, &b, out, n, false);
            }
            assert!(whole.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()), "({m},{k},{n})");
        }
    }

    /// Rows rounded once (search's centroids) are whole tiles: the AMX tiling, through its
    /// model, multiplies them to what the `vdpbf16ps` kernel gives, up to summation order.
    #[test]
    fn packed_rows_feed_the_tile_kernel() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        for &(m, k, n) in &[(1, 3, 5), (100, 128, 32), (37, 40, 70)] {
            let (a, w) = inputs(m, k, n);
            let (rows, b) = (PackedRows::pack(&a, m, k), PackedB::pack(&w, k, n));
            let (mut tiles, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            amx::row_block(&mut amx::Model::default(), &rows.data, m, &b, &mut tiles, n, false);
            matmul_with(Kernel::Avx512, &a, k, m, &b, 0..n.div_ceil(NR), &mut want, n, false);
            for (i, (t, w)) in tiles.iter().zip(&want).enumerate() {
                assert!((t - w).abs() <= 1e-5 * k as f32, "({m},{k},{n}) #{i}: {t} vs {w}");
            }
        }
    }

    /// A product split at multiples of [`ROW_GRANULE`] (as search splits its stage 1 across
    /// threads) gives every bit of the whole product, on every kernel this CPU runs.
    #[test]
    fn row_ranges_at_the_granule_give_the_whole_product_bit_for_bit() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let (m, k, n) = (ROW_GRANULE * 3 + 17, 128, 32);
        let (a, w) = inputs(m, k, n);
        let (rows, b) = (PackedRows::pack(&a, m, k), PackedB::pack(&w, k, n));
        let mut kinds = vec![Kernel::Avx512];
        if crate::cpu::Features::get().amx_usable {
            kinds.push(Kernel::Amx);
        }
        for kind in kinds {
            let mut whole = vec![f32::NAN; m * n];
            matmul_rows(kind, &rows, &b, &mut whole);
            let mut split = vec![f32::NAN; m * n];
            for (i, out) in split.chunks_mut(ROW_GRANULE * 2 * n).enumerate() {
                let start = i * ROW_GRANULE * 2;
                matmul_row_range(kind, &rows, start..start + out.len() / n, &b, out);
            }
            assert!(whole.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()), "{kind:?}");
        }
    }

    #[test]
    fn vector_row_rounding_matches_the_portable_one() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        // Widths around the 16-float step (odd ones zero-pad), rows read at a stride, values
        // from 1e-30 to 1e4 of both signs and exact ties.
        for &(rows, k, stride) in
            &[(3, 1, 1), (2, 15, 17), (4, 16, 16), (3, 31, 40), (5, 384, 390), (2, 33, 33)]
        {
            let a: Vec<f32> = (0..rows * stride)
                .map(|i| {
                    let mag = 10f32.powi((i * 7 % 35) as i32 - 30);
                    let tie = if i % 5 == 0 { 1.0 + 1.0 / 256.0 } else { 1.0 + (i % 97) as f32 / 97.0 };
                    if i % 2 == 0 {
                        mag * tie
                    } else {
                        -mag * tie
                    }
                })
                .collect();
            let kp = usize::div_ceil(k, 2);
            // Unscaled (the dense layers) and scaled before rounding (attention's keys).
            for scale in [1.0f32, 0.176_776_7] {
                let mut fast = Vec::new();
                pack_rows(&a, stride, rows, k, kp, scale, &mut fast);
                let mut slow = vec![0u32; rows * kp];
                pack_rows_portable(&a, stride, k, kp, scale, &mut slow);
                assert_eq!(fast, slow, "({rows},{k},{stride}) scale {scale}");
            }
        }
    }

    #[test]
    fn attention_packings_match_the_element_wise_one() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        // Odd and even widths, more than one panel, rows read at a stride.
        for &(rows, width, stride) in &[(1usize, 1usize, 1usize), (45, 32, 96), (33, 7, 10), (70, 64, 200)] {
            let src: Vec<f32> =
                (0..rows * stride).map(|i| ((i * 7919 % 1013) as f32 / 101.3) - 5.0).collect();
            let scale = 0.176_776_7;
            let mut want = PackedB::default();
            want.repack(width, rows, |r, c| src[c * stride + r] * scale);
            let mut got = PackedB::default();
            got.repack_transposed(&src, stride, rows, width, scale);
            assert_eq!((got.k, got.n, got.kp), (want.k, want.n, want.kp));
            assert_eq!(got.data, want.data, "transposed ({rows},{width},{stride})");
            want.repack(rows, width, |r, c| src[r * stride + c]);
            got.repack_rows(&src, stride, rows, width);
            assert_eq!((got.k, got.n, got.kp), (want.k, want.n, want.kp));
            assert_eq!(got.data, want.data, "rows ({rows},{width},{stride})");
        }
    }

    #[test]
    fn strided_product_of_a_repacked_transpose_matches_the_dense_one() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        // Attention's shapes: Q rows inside wider rows, Kᵀ packed from K's rows, output at a stride;
        // 300 pairs of k also cross the KC chunking.
        for &(m, k, n, a_stride, out_stride) in &[(37, 32, 45, 96, 50), (5, 600, 33, 601, 40)] {
            let a: Vec<f32> = (0..m * a_stride).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect();
            let kt: Vec<f32> = (0..n * k).map(|i| ((i * 104_729 % 997) as f32 / 997.0) - 0.5).collect();
            // The dense reference: contiguous rows of `a`, `w = ktᵀ` row-major.
            let dense_a: Vec<f32> = (0..m).flat_map(|i| a[i * a_stride..][..k].to_vec()).collect();
            let w: Vec<f32> = (0..k * n).map(|i| kt[(i % n) * k + i / n]).collect();
            let mut want = vec![0f32; m * n];
            matmul(Kernel::Avx512, &dense_a, m, &PackedB::pack(&w, k, n), &mut want, false);
            let mut packed = PackedB::pack(&[0.0; 4], 2, 2);
            packed.repack(k, n, |r, c| kt[c * k + r]);
            let mut got = vec![7f32; m * out_stride];
            matmul_strided(Kernel::Avx512, &a, a_stride, m, &packed, &mut got, out_stride, false);
            for i in 0..m {
                assert_eq!(&got[i * out_stride..][..n], &want[i * n..][..n], "row {i}");
                assert!(
                    got[i * out_stride + n..(i + 1) * out_stride].iter().all(|&x| x == 7.0),
                    "row {i} padding"
                );
            }
        }
    }
}

#[cfg(test)]
mod speed {
    /// Throughput of the bf16 and f32 dense products on BERT-base-like shapes and on one
    /// 180-token sequence of MiniLM and ModernBERT-base:
    /// `cargo test --release --workspace bf16_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn bf16_speed() {
        use crate::ops::{matmul as f32_matmul, Mat};
        for &(m, k, n) in &[
            (1024, 384, 1152),
            (1024, 384, 1536),
            (1024, 1536, 384),
            (180, 384, 1152),
            (180, 768, 2304),
            (180, 1152, 768),
            (180, 768, 768),
            (20, 384, 1152),
            (20, 768, 2304),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
            let w: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
            let packed = super::PackedB::pack(&w, k, n);
            let mut out = vec![0f32; m * n];
            let flops = 2.0 * (m * k * n) as f64;
            let reps = 20;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f32_matmul(Mat::dense(&a, m, k), Mat::dense(&w, k, n), &mut out, n, false, 1.0);
            }
            let f32_rate = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
            let mut bf16_rate = 0.0;
            if super::available() {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    super::matmul(super::Bf16Dense::Avx512, &a, m, &packed, &mut out, false);
                }
                bf16_rate = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
            }
            println!("[{m} x {k}] x [{k} x {n}]: f32 {f32_rate:.1} GFLOP/s, bf16 {bf16_rate:.1} GFLOP/s");
        }
    }
}
