//! The 8-bit product of [`super::scores`] on Intel AMX tiles: one `tdpbusd` multiplies 16 rows
//! of 64 unsigned bytes by 64 signed bytes of 16 query tokens into 16 × 16 exact i32 sums,
//! 16,384 multiply-adds per instruction (256 for an AVX-512 VNNI `vpdpbusd`).
//!
//! It reads the operands of the VNNI kernel as they are: rows offset by 128 (left-hand tiles,
//! 16 rows of a 64-byte step at the row stride) and the query tokens packed four bytes per token
//! per group of four dimensions, which is the layout of an AMX right-hand tile (16 groups of
//! four dimensions × 16 tokens). The sums are the same integers as every other path's, and the
//! scores come out of them with the same operations, so every path gives the same bits.
//!
//! As in [`crate::bf16::amx`], the tiling is written once, against [`I8Tiles`], with
//! [`Model`] (what Intel's manual defines `tdpbusd` to compute) and [`Hardware`] (the
//! instructions, used only after they matched the model in this process: [`usable`]).

use super::{I8Columns, I8Rows, LANES};

/// Rows of a tile; query tokens per accumulator.
const TILE: usize = 16;
/// Bytes of a row per step: the width of a left-hand tile row.
const STEP: usize = 64;
const _: () = assert!(TILE == LANES);
/// Blocks of 32 rows ahead whose rows are prefetched (1, 2 and 4 measured alike).
const AHEAD: usize = 1;

/// The eight tile registers as this kernel uses them: four accumulators `C[2i + j]` (16 rows ×
/// 16 i32), two left-hand tiles `A[i]` (16 rows of a 64-byte step) and two right-hand tiles
/// `B[j]` (16 groups of four dimensions × 16 tokens), all 16 rows × 64 bytes.
pub trait I8Tiles {
    /// Configures the tiles; before any other call.
    fn start(&mut self);
    /// Releases the tiles.
    fn finish(&mut self);
    /// `C[c] = 0`.
    fn zero(&mut self, c: usize);
    /// `A[i]` = 16 rows of 64 bytes, row `r` at `src[r * stride]`.
    fn load_a(&mut self, i: usize, src: &[u8], stride: usize);
    /// `B[j]` = 16 rows of 64 bytes, row `r` at `src[r * stride]`.
    fn load_b(&mut self, j: usize, src: &[i8], stride: usize);
    /// `C[2i + j] += A[i] · B[j]` (`tdpbusd`).
    fn dot(&mut self, i: usize, j: usize);
    /// Writes `C[c]`'s 16 rows of 16 i32, row `r` at `dst[r * stride]`.
    fn store(&mut self, c: usize, dst: &mut [i32], stride: usize);
}

/// Panics unless `rows` rows of `width` elements at `stride` fit in a slice of `len` (rows may
/// overlap: a left-hand tile's rows are 64 bytes of rows as narrow as 4).
fn check_tile(len: usize, rows: usize, width: usize, stride: usize) {
    assert!(rows > 0 && len >= (rows - 1) * stride + width, "amx int8: tile out of bounds");
}

/// [`super::scores`] on tiles `t`: `out[r][q]` for `out.len() / nq` rows from `first`, the
/// exact integer sums of rows × query tokens finished by [`super::finish_rows`].
///
/// Blocks of 32 rows × 32 query tokens (four accumulators: each tile product waits on the one
/// before it into the same accumulator), the row in steps of 64 bytes. A last step past the end
/// of a row reads on into the next row's bytes, which meet the zero groups of dimensions that
/// [`I8Columns`] pads its tokens with: their products are 0. Rows too close to the end of the
/// rows for that are copied out first.
pub(super) fn scores<T: I8Tiles>(t: &mut T, rows: &I8Rows, first: usize, cols: &I8Columns, out: &mut [f32]) {
    let (nq, lanes, width) = (cols.nq, cols.lanes, rows.width);
    let n = out.len() / nq;
    let steps = width.div_ceil(STEP);
    assert!(cols.packed.len() >= steps * STEP * lanes, "amx int8: query tokens not padded");
    let groups = lanes / TILE;
    const SUMS_STRIDE: usize = 2 * TILE;
    let mut sums = [0i32; 2 * TILE * SUMS_STRIDE];
    let mut padded: Vec<u8> = Vec::new();
    let b_at = |s: usize, g: usize| &cols.packed[(s * (STEP / 4) * lanes + g * TILE) * 4..];
    t.start();
    for r0 in (0..n).step_by(2 * TILE) {
        let m = (2 * TILE).min(n - r0);
        let tall = m > TILE;
        let at = (first + r0) * width;
        // The bytes the block's tile loads read: every row's steps, the last one whole.
        let reach = at + (m.div_ceil(TILE) * TILE - 1) * width + steps * STEP;
        let src: &[u8] = if reach <= rows.data.len() {
            &rows.data[at..reach]
        } else {
            padded.clear();
            padded.extend_from_slice(&rows.data[at..at + m * width]);
            padded.resize(2 * TILE * width + STEP, 128);
            &padded
        };
        // The next block's rows start loading (each tile load otherwise waits on its lines).
        let ahead = at + AHEAD * 2 * TILE * width;
        if let Some(next) = rows.data.get(ahead..(ahead + 2 * TILE * width).min(rows.data.len())) {
            crate::prefetch::prefetch(next);
        }
        for g0 in (0..groups).step_by(2) {
            let wide = g0 + 1 < groups;
            let live = [true, wide, tall, tall && wide];
            for c in (0..4).filter(|&c| live[c]) {
                t.zero(c);
            }
            for s in 0..steps {
                let k0 = s * STEP;
                t.load_b(0, b_at(s, g0), lanes * 4);
                if wide {
                    t.load_b(1, b_at(s, g0 + 1), lanes * 4);
                }
                t.load_a(0, &src[k0..], width);
                t.dot(0, 0);
                if wide {
                    t.dot(0, 1);
                }
                if tall {
                    t.load_a(1, &src[TILE * width + k0..], width);
                    t.dot(1, 0);
                    if wide {
                        t.dot(1, 1);
                    }
                }
            }
            for c in (0..4).filter(|&c| live[c]) {
                t.store(c, &mut sums[(c / 2) * TILE * SUMS_STRIDE + (c % 2) * TILE..], SUMS_STRIDE);
            }
            let lane0 = g0 * TILE;
            let span = (2 * TILE).min(nq - lane0);
            super::finish_rows(
                &sums,
                SUMS_STRIDE,
                &rows.step[first + r0..first + r0 + m],
                cols,
                lane0..lane0 + span,
                &mut out[r0 * nq..(r0 + m) * nq],
            );
        }
    }
    t.finish();
}

/// `tdpbusd` computed in software, as Intel's manual defines it: each i32 of `C` plus, over
/// the 16 groups of four bytes, the four products of an unsigned byte of `A` and a signed byte
/// of `B`, wrapping (the sums here never come near it).
pub struct Model {
    a: [[[u8; STEP]; TILE]; 2],
    b: [[[i8; STEP]; TILE]; 2],
    c: [[[i32; TILE]; TILE]; 4],
    started: bool,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            a: [[[0; STEP]; TILE]; 2],
            b: [[[0; STEP]; TILE]; 2],
            c: [[[0; TILE]; TILE]; 4],
            started: false,
        }
    }
}

/// 16 rows of 64 bytes from `src`.
fn read_tile<T: Copy + Default>(src: &[T], stride: usize) -> [[T; STEP]; TILE] {
    check_tile(src.len(), TILE, STEP, stride);
    std::array::from_fn(|r| std::array::from_fn(|k| src[r * stride + k]))
}

impl I8Tiles for Model {
    fn start(&mut self) {
        self.started = true;
    }
    fn finish(&mut self) {
        self.started = false;
    }
    fn zero(&mut self, c: usize) {
        assert!(self.started, "amx int8 model: tiles used before start");
        self.c[c] = [[0; TILE]; TILE];
    }
    fn load_a(&mut self, i: usize, src: &[u8], stride: usize) {
        assert!(self.started, "amx int8 model: tiles used before start");
        self.a[i] = read_tile(src, stride);
    }
    fn load_b(&mut self, j: usize, src: &[i8], stride: usize) {
        assert!(self.started, "amx int8 model: tiles used before start");
        self.b[j] = read_tile(src, stride);
    }
    fn dot(&mut self, i: usize, j: usize) {
        assert!(self.started, "amx int8 model: tiles used before start");
        let (a, b) = (&self.a[i], &self.b[j]);
        for (crow, arow) in self.c[2 * i + j].iter_mut().zip(a) {
            for (n, acc) in crow.iter_mut().enumerate() {
                for (k, brow) in b.iter().enumerate() {
                    for p in 0..4 {
                        *acc = acc.wrapping_add(i32::from(arow[4 * k + p]) * i32::from(brow[4 * n + p]));
                    }
                }
            }
        }
    }
    fn store(&mut self, c: usize, dst: &mut [i32], stride: usize) {
        assert!(self.started, "amx int8 model: tiles used before start");
        assert!(stride >= TILE, "amx int8 model: output rows overlap");
        check_tile(dst.len(), TILE, TILE, stride);
        for (r, row) in self.c[c].iter().enumerate() {
            dst[r * stride..r * stride + TILE].copy_from_slice(row);
        }
    }
}

/// Whether this process may use the AMX tiles for 8-bit products: the CPU has AMX-INT8 (with
/// the tile state Linux grants as for [`crate::bf16::amx`]), and the instructions matched
/// [`Model`] on a few products. Decided once per process.
pub fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        let Some(mut hw) = Hardware::new() else { return false };
        hardware_matches_model(&mut hw)
    })
}

/// Runs a few products (a short last row tile, a last step shorter than 64 bytes, more than four
/// lane groups) on the hardware and on the model; true when every score is the same.
fn hardware_matches_model(hw: &mut Hardware) -> bool {
    [(37, 128, 32), (20, 100, 70), (16, 384, 16)].into_iter().all(|(n, dim, nq)| {
        let (rows, cols) = test_operands(n + 3, dim, nq);
        let (mut got, mut want) = (vec![f32::NAN; n * nq], vec![0f32; n * nq]);
        scores(hw, &rows, 3, &cols, &mut got);
        scores(&mut Model::default(), &rows, 3, &cols, &mut want);
        got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits())
    })
}

/// Deterministic operands in [-1, 1]: `n` rows and `nq` query tokens of `dim` values.
pub(super) fn test_operands(n: usize, dim: usize, nq: usize) -> (I8Rows, I8Columns) {
    let value = |i: usize, p: usize| ((i * p % 2003) as f32 / 1001.0) - 1.0;
    let rows: Vec<f32> = (0..n * dim).map(|i| value(i, 7919)).collect();
    let cols: Vec<f32> = (0..nq * dim).map(|i| value(i, 104_729)).collect();
    (I8Rows::new(&rows, n, dim), I8Columns::new(&cols, nq, dim))
}

pub use hardware::Hardware;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(feature = "scalar-only")))]
mod hardware {
    use std::arch::asm;

    use super::{check_tile, I8Tiles, STEP, TILE};

    /// The tile instructions: `C[2i + j]` in `tmm0..tmm3`, `A[i]` in `tmm4`/`tmm5`, `B[j]` in
    /// `tmm6`/`tmm7`. Only [`Hardware::new`] makes one; the compiler never uses tile registers,
    /// so they keep their values between the `asm!` blocks of one product.
    pub struct Hardware {
        started: bool,
    }

    /// `ldtilecfg`'s 64-byte operand: palette 1, tiles 0–7 of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [STEP as u16, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [TILE as u8, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// CPUID leaf 7's EDX bit for AMX-INT8.
    const AMX_INT8: u32 = 1 << 25;

    impl Hardware {
        /// The tiles, when the CPU has AMX-INT8 and this process may use the tile state (the
        /// check and request of [`crate::bf16::amx::Hardware::new`], whose palette this uses).
        /// Checked once per process.
        pub fn new() -> Option<Hardware> {
            static INT8: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            let int8 = *INT8.get_or_init(|| {
                // `__cpuid_count` is a safe function from Rust 1.94; `unsafe` keeps 1.89 building.
                #[allow(unused_unsafe)]
                // SAFETY: CPUID leaf 7 exists wherever `bf16::amx::Hardware::new` succeeds (it
                // reads leaf 0x1d), which is checked first.
                let edx = || unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
                crate::bf16::amx::Hardware::new().is_some() && edx() & AMX_INT8 != 0
            });
            int8.then_some(Hardware { started: false })
        }
    }

    impl I8Tiles for Hardware {
        fn start(&mut self) {
            // SAFETY: `Hardware` exists only where the CPU has AMX-INT8 and Linux granted the
            // tile state; `CONFIG` is a valid palette-1 configuration of 64 readable bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags)) };
            self.started = true;
        }

        fn finish(&mut self) {
            // SAFETY: as in `start`; releasing tiles touches no memory.
            unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
            self.started = false;
        }

        fn zero(&mut self, c: usize) {
            assert!(self.started, "amx int8: tiles used before start");
            // SAFETY: tiles configured (asserted); touches no memory.
            unsafe {
                match c {
                    0 => asm!("tilezero tmm0", options(nostack, nomem, preserves_flags)),
                    1 => asm!("tilezero tmm1", options(nostack, nomem, preserves_flags)),
                    2 => asm!("tilezero tmm2", options(nostack, nomem, preserves_flags)),
                    _ => asm!("tilezero tmm3", options(nostack, nomem, preserves_flags)),
                }
            }
        }

        fn load_a(&mut self, i: usize, src: &[u8], stride: usize) {
            assert!(self.started, "amx int8: tiles used before start");
            check_tile(src.len(), TILE, STEP, stride);
            let (p, s) = (src.as_ptr(), stride);
            // SAFETY: tiles configured; the 16 rows of 64 bytes at `s`-byte steps lie inside
            // `src` (checked above).
            unsafe {
                if i == 0 {
                    asm!("tileloadd tmm4, [{p} + {s}*1]", p = in(reg) p, s = in(reg) s,
                        options(nostack, readonly, preserves_flags));
                } else {
                    asm!("tileloadd tmm5, [{p} + {s}*1]", p = in(reg) p, s = in(reg) s,
                        options(nostack, readonly, preserves_flags));
                }
            }
        }

        fn load_b(&mut self, j: usize, src: &[i8], stride: usize) {
            assert!(self.started, "amx int8: tiles used before start");
            check_tile(src.len(), TILE, STEP, stride);
            let (p, s) = (src.as_ptr(), stride);
            // SAFETY: as in `load_a`.
            unsafe {
                if j == 0 {
                    asm!("tileloadd tmm6, [{p} + {s}*1]", p = in(reg) p, s = in(reg) s,
                        options(nostack, readonly, preserves_flags));
                } else {
                    asm!("tileloadd tmm7, [{p} + {s}*1]", p = in(reg) p, s = in(reg) s,
                        options(nostack, readonly, preserves_flags));
                }
            }
        }

        fn dot(&mut self, i: usize, j: usize) {
            assert!(self.started, "amx int8: tiles used before start");
            // SAFETY: tiles configured (asserted); touches no memory.
            unsafe {
                match (i, j) {
                    (0, 0) => asm!("tdpbusd tmm0, tmm4, tmm6", options(nostack, nomem, preserves_flags)),
                    (0, _) => asm!("tdpbusd tmm1, tmm4, tmm7", options(nostack, nomem, preserves_flags)),
                    (_, 0) => asm!("tdpbusd tmm2, tmm5, tmm6", options(nostack, nomem, preserves_flags)),
                    _ => asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem, preserves_flags)),
                }
            }
        }

        fn store(&mut self, c: usize, dst: &mut [i32], stride: usize) {
            assert!(self.started, "amx int8: tiles used before start");
            assert!(stride >= TILE, "amx int8: output rows overlap");
            check_tile(dst.len(), TILE, TILE, stride);
            let (p, s) = (dst.as_mut_ptr(), stride * 4);
            // SAFETY: tiles configured; the 16 rows of 64 bytes at `s`-byte steps lie inside
            // `dst` (checked above), which we borrow mutably.
            unsafe {
                match c {
                    0 => asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) p, s = in(reg) s,
                        options(nostack, preserves_flags)),
                    1 => asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) p, s = in(reg) s,
                        options(nostack, preserves_flags)),
                    2 => asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) p, s = in(reg) s,
                        options(nostack, preserves_flags)),
                    _ => asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) p, s = in(reg) s,
                        options(nostack, preserves_flags)),
                }
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(feature = "scalar-only"))))]
mod hardware {
    use super::I8Tiles;

    /// No tiles on this platform (or build): [`Hardware::new`] is always `None`, so no value
    /// exists and the methods below are never reached.
    pub struct Hardware(());

    impl Hardware {
        /// Always `None` here.
        pub fn new() -> Option<Hardware> {
            None
        }
    }

    const NONE: &str = "no AMX tiles on this platform";

    impl I8Tiles for Hardware {
        fn start(&mut self) {
            unreachable!("{NONE}")
        }
        fn finish(&mut self) {
            unreachable!("{NONE}")
        }
        fn zero(&mut self, _: usize) {
            unreachable!("{NONE}")
        }
        fn load_a(&mut self, _: usize, _: &[u8], _: usize) {
            unreachable!("{NONE}")
        }
        fn load_b(&mut self, _: usize, _: &[i8], _: usize) {
            unreachable!("{NONE}")
        }
        fn dot(&mut self, _: usize, _: usize) {
            unreachable!("{NONE}")
        }
        fn store(&mut self, _: usize, _: &mut [i32], _: usize) {
            unreachable!("{NONE}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model computes `tdpbusd` as defined: unsigned bytes of `A` times signed bytes of `B`,
    /// four per i32, added to what `C` held.
    #[test]
    fn the_model_computes_one_tile_product_as_defined() {
        let a: Vec<u8> = (0..TILE * STEP).map(|i| (i * 37 % 256) as u8).collect();
        let b: Vec<i8> = (0..TILE * STEP).map(|i| (i * 91 % 256) as u8 as i8).collect();
        let mut m = Model::default();
        m.start();
        m.zero(2);
        m.load_a(1, &a, STEP);
        m.load_b(0, &b, STEP);
        m.dot(1, 0);
        m.dot(1, 0);
        let mut out = vec![i32::MIN; TILE * 20];
        m.store(2, &mut out, 20);
        for r in 0..TILE {
            for n in 0..TILE {
                let want: i32 = (0..STEP)
                    .map(|k| 2 * i32::from(a[r * STEP + k]) * i32::from(b[(k / 4) * STEP + 4 * n + k % 4]))
                    .sum();
                assert_eq!(out[r * 20 + n], want, "[{r}][{n}]");
            }
            assert!(out[r * 20 + TILE..(r + 1) * 20].iter().all(|&x| x == i32::MIN), "row {r} stride gap");
        }
    }

    /// The tiling, through the model, against the portable loop (the same bits): rows across
    /// row tiles and short last tiles, a first row past 0, dims with a short last step or none,
    /// query tokens across one to five lane groups.
    #[test]
    fn the_tiled_product_gives_the_portable_scores() {
        for &(n, dim, nq) in
            &[(1, 4, 1), (16, 64, 16), (17, 30, 3), (40, 128, 32), (33, 100, 70), (5, 384, 17), (48, 192, 64)]
        {
            let first = n % 3;
            let (rows, cols) = test_operands(n + first, dim, nq);
            let mut got = vec![f32::NAN; n * nq];
            scores(&mut Model::default(), &rows, first, &cols, &mut got);
            let mut want = vec![0f32; n * nq];
            super::super::scores_portable(&rows, first, &cols, &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "({n}, {dim}, {nq})");
        }
    }

    /// Where the CPU and the OS allow the tiles, the instructions against the model (skipped
    /// elsewhere).
    #[test]
    fn hardware_tiles_match_the_model() {
        let Some(mut hw) = Hardware::new() else {
            eprintln!("skipped: no AMX-INT8 tiles on this CPU");
            return;
        };
        assert!(hardware_matches_model(&mut hw));
        for &(n, dim, nq) in &[(2048, 128, 32), (300, 96, 40), (7, 8, 5)] {
            let (rows, cols) = test_operands(n, dim, nq);
            let (mut got, mut want) = (vec![0f32; n * nq], vec![0f32; n * nq]);
            scores(&mut hw, &rows, 0, &cols, &mut got);
            super::super::scores_portable(&rows, 0, &cols, &mut want);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "({n}, {dim}, {nq})");
        }
    }
}
