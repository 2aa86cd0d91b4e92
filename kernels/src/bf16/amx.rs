//! The bf16 product on Intel AMX tiles (Sapphire Rapids and later), where one `tdpbf16ps`
//! multiplies a 16 × 32 bf16 tile by a 32 × 16 one into a 16 × 16 f32 tile: sixteen times the
//! multiply-adds of an AVX-512 f32 FMA per instruction.
//!
//! It reads the same operands as the AVX-512 BF16 kernel of [`super`]: weights packed in
//! panels of [`NR`] columns, each pair of rows of `k` interleaved, which is the layout of an AMX
//! right-hand tile (16 pairs × 16 columns, 64-byte rows at a stride of `NR` dwords); and rows of
//! activations rounded to bf16 pairs, whose 16-pair slices are left-hand tiles. Panels store
//! `k` in whole tiles ([`PackedB::ks`]) and row blocks are padded to whole tiles, with zeros.
//!
//! The tiling is written once, against [`Tiles`], with two implementations: [`Hardware`] (the
//! instructions; Linux, once the process has asked the kernel for the tile state) and [`Model`],
//! which computes what Intel's manual defines those instructions to compute. The tests check the
//! tiling through the model on any CPU, and the hardware against the model where AMX exists; at
//! run time the hardware is used only after it has matched the model on a few products in this
//! process ([`usable`]).

use super::{PackedB, NR, TILE_PAIRS};

/// Rows of a tile, and u32 (bf16 pairs, or f32) per tile row.
const TILE: usize = 16;
const _: () = assert!(TILE == TILE_PAIRS && NR == 2 * TILE);

/// The eight tile registers as this kernel uses them: four 16 × 16 f32 accumulators `C[i][j]`
/// (index `2i + j`), two left-hand tiles `A[i]` (16 rows × 16 pairs) and two right-hand tiles
/// `B[j]` (16 pairs × 16 columns). Loads read 16 rows of 16 u32, row `r` at `src[r * stride]`.
pub trait Tiles {
    /// Configures the tiles (all 16 rows × 64 bytes); before any other call.
    fn start(&mut self);
    /// Releases the tiles (their state returns to init, cheap to save on a context switch).
    fn finish(&mut self);
    /// `C[c] = 0`.
    fn zero(&mut self, c: usize);
    /// `A[i] = src` rows.
    fn load_a(&mut self, i: usize, src: &[u32], stride: usize);
    /// `B[j] = src` rows.
    fn load_b(&mut self, j: usize, src: &[u32], stride: usize);
    /// `C[2i + j] += A[i] · B[j]` (`tdpbf16ps`).
    fn dot(&mut self, i: usize, j: usize);
    /// Writes `C[c]`'s 16 rows of 16 f32, row `r` at `dst[r * stride]`.
    fn store(&mut self, c: usize, dst: &mut [f32], stride: usize);
}

/// Panics unless 16 rows of 16 elements at `stride` fit in a slice of `len`.
fn check_tile(len: usize, stride: usize) {
    assert!(stride >= TILE && len >= (TILE - 1) * stride + TILE, "amx: tile out of bounds");
}

/// `out (+)= ablock · b` for one block of `mc` rows rounded to bf16 pairs: `ablock` holds
/// `ceil(mc / 16) · 16` rows of `b.ks` u32 (zeros past the pairs and the rows); row `i` of `out`
/// at `out[i * out_stride]`, `b.n` wide. Blocks of 32 rows by 32 columns (one panel), `k` in
/// tiles of 16 pairs, all of `k` accumulated in the tiles; whole blocks of a product that is not
/// added to `out` are stored straight from the tiles, the others through a buffer.
pub fn row_block<T: Tiles>(
    t: &mut T,
    ablock: &[u32],
    mc: usize,
    b: &PackedB,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    row_block_panels(t, ablock, mc, b, 0..b.n.div_ceil(NR), out, out_stride, accumulate)
}

/// [`row_block`] on `b`'s panels `panels` only: column 0 of `out` is the first column of panel
/// `panels.start`.
#[allow(clippy::too_many_arguments)]
pub fn row_block_panels<T: Tiles>(
    t: &mut T,
    ablock: &[u32],
    mc: usize,
    b: &PackedB,
    panels: std::ops::Range<usize>,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    let (ks, n) = (b.ks, b.n);
    let first = panels.start;
    let cols = n.min(panels.end * NR).saturating_sub(first * NR);
    assert!(ks % TILE == 0 && ablock.len() >= mc.div_ceil(TILE) * TILE * ks, "amx: row block shape");
    assert!(mc == 0 || (mc - 1) * out_stride + cols <= out.len(), "amx: output out of bounds");
    // The four accumulators of a 32 × 32 block, stored side by side.
    let mut c = [0f32; 4 * TILE * TILE];
    const W: usize = 2 * TILE;
    t.start();
    for (p, panel) in b.data.chunks_exact(ks * NR).enumerate().take(panels.end).skip(first) {
        let n0 = p * NR;
        let width = NR.min(n - n0);
        let wide = width > TILE;
        // Where the panel's columns land in `out`.
        let c0 = n0 - first * NR;
        for r0 in (0..mc).step_by(2 * TILE) {
            let rows = (2 * TILE).min(mc - r0);
            let tall = rows > TILE;
            // Which of the accumulators `C[2i + j]` this block uses.
            let live = [true, wide, tall, tall && wide];
            for ci in (0..4).filter(|&ci| live[ci]) {
                t.zero(ci);
            }
            for k0 in (0..ks).step_by(TILE) {
                t.load_b(0, &panel[k0 * NR..], NR);
                if wide {
                    t.load_b(1, &panel[k0 * NR + TILE..], NR);
                }
                t.load_a(0, &ablock[r0 * ks + k0..], ks);
                t.dot(0, 0);
                if wide {
                    t.dot(0, 1);
                }
                if tall {
                    t.load_a(1, &ablock[(r0 + TILE) * ks + k0..], ks);
                    t.dot(1, 0);
                    if wide {
                        t.dot(1, 1);
                    }
                }
            }
            if !accumulate && rows == 2 * TILE && width == NR {
                // A whole block, not added to `out`: the tiles are stored straight into it.
                for ci in 0..4 {
                    let at = (r0 + (ci / 2) * TILE) * out_stride + c0 + (ci % 2) * TILE;
                    t.store(ci, &mut out[at..], out_stride);
                }
                continue;
            }
            for ci in (0..4).filter(|&ci| live[ci]) {
                let at = (ci / 2) * TILE * W + (ci % 2) * TILE;
                t.store(ci, &mut c[at..], W);
            }
            for r in 0..rows {
                let src = &c[r * W..][..width];
                let dst = &mut out[(r0 + r) * out_stride + c0..][..width];
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
    }
    t.finish();
}

/// bf16 bits → f32, denormals read as zero (as `tdpbf16ps` does).
fn widen(h: u32) -> f32 {
    let bits = (h & 0xffff) << 16;
    if bits & 0x7f80_0000 == 0 {
        f32::from_bits(bits & 0x8000_0000)
    } else {
        f32::from_bits(bits)
    }
}

/// The tile instructions computed in software, as Intel's manual defines them: for each output
/// element and each pair, the even then the odd product (exact in f32) added with round to
/// nearest even; bf16 denormals read as zero and denormal results flushed to zero.
pub struct Model {
    a: [[[u32; TILE]; TILE]; 2],
    b: [[[u32; TILE]; TILE]; 2],
    c: [[[f32; TILE]; TILE]; 4],
    started: bool,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            a: [[[0; TILE]; TILE]; 2],
            b: [[[0; TILE]; TILE]; 2],
            c: [[[0.0; TILE]; TILE]; 4],
            started: false,
        }
    }
}

/// 16 rows of 16 u32 from `src`.
fn read_tile(src: &[u32], stride: usize) -> [[u32; TILE]; TILE] {
    check_tile(src.len(), stride);
    std::array::from_fn(|r| std::array::from_fn(|j| src[r * stride + j]))
}

impl Tiles for Model {
    fn start(&mut self) {
        self.started = true;
    }
    fn finish(&mut self) {
        self.started = false;
    }
    fn zero(&mut self, c: usize) {
        assert!(self.started, "amx model: tiles used before start");
        self.c[c] = [[0.0; TILE]; TILE];
    }
    fn load_a(&mut self, i: usize, src: &[u32], stride: usize) {
        assert!(self.started, "amx model: tiles used before start");
        self.a[i] = read_tile(src, stride);
    }
    fn load_b(&mut self, j: usize, src: &[u32], stride: usize) {
        assert!(self.started, "amx model: tiles used before start");
        self.b[j] = read_tile(src, stride);
    }
    fn dot(&mut self, i: usize, j: usize) {
        assert!(self.started, "amx model: tiles used before start");
        let (a, b, c) = (&self.a[i], &self.b[j], &mut self.c[2 * i + j]);
        for (crow, arow) in c.iter_mut().zip(a) {
            for (&ap, brow) in arow.iter().zip(b) {
                for (acc, &bp) in crow.iter_mut().zip(brow) {
                    let mut s = *acc + widen(ap) * widen(bp);
                    s += widen(ap >> 16) * widen(bp >> 16);
                    *acc = if s.is_subnormal() { 0.0f32.copysign(s) } else { s };
                }
            }
        }
    }
    fn store(&mut self, c: usize, dst: &mut [f32], stride: usize) {
        assert!(self.started, "amx model: tiles used before start");
        check_tile(dst.len(), stride);
        for (r, row) in self.c[c].iter().enumerate() {
            dst[r * stride..][..TILE].copy_from_slice(row);
        }
    }
}

/// Whether this process may use the AMX tiles for bf16 products: the CPU has AMX-TILE and
/// AMX-BF16 with the palette this kernel assumes, Linux granted the tile state, and the
/// instructions matched [`Model`] on a few products. Decided once per process.
pub fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        let Some(mut hw) = Hardware::new() else { return false };
        // Tiles that disagree with their definition are not used (`cpu::Features` shows them
        // as present but unusable).
        hardware_matches_model(&mut hw)
    })
}

/// Whether the CPU reports AMX-TILE and AMX-BF16 with the tile geometry this kernel assumes
/// (whether or not this process may use them).
pub fn present() -> bool {
    hardware::cpu_has_amx()
}

/// Runs a few products (edge rows, one- and two-tile widths, `k` over several tiles,
/// accumulating and not) on the hardware and on the model; true when every element agrees to
/// within f32 summation-order error.
fn hardware_matches_model(hw: &mut Hardware) -> bool {
    [(40, 70, 50, false), (33, 384, 64, true), (7, 33, 17, false)].into_iter().all(|(m, k, n, acc)| {
        let (ablock, b) = test_operands(m, k, n);
        let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32 * 0.5).collect();
        let (mut got, mut want) = (init.clone(), init);
        row_block(hw, &ablock, m, &b, &mut got, n, acc);
        row_block(&mut Model::default(), &ablock, m, &b, &mut want, n, acc);
        let scale = k as f32 * 0.25 + 4.0;
        got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-5 * scale)
    })
}

/// Deterministic operands in [-0.5, 0.5): a padded row block for `m` rows of `k`, and `[k, n]`
/// packed weights.
pub fn test_operands(m: usize, k: usize, n: usize) -> (Vec<u32>, PackedB) {
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect();
    let w: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 997) as f32 / 997.0) - 0.5).collect();
    let b = PackedB::pack(&w, k, n);
    let mut ablock = Vec::new();
    super::pack_padded(&a, k, m, k, b.ks, &mut ablock);
    (ablock, b)
}

pub use hardware::Hardware;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(feature = "scalar-only")))]
mod hardware {
    use std::arch::asm;

    use super::{check_tile, Tiles, TILE};

    /// The tile instructions: `C[2i + j]` in `tmm0..tmm3`, `A[i]` in `tmm4`/`tmm5`, `B[j]` in
    /// `tmm6`/`tmm7`. Only [`Hardware::new`] makes one, after checking the CPU and asking Linux
    /// for the tile state; the compiler itself never uses tile registers, so they keep their
    /// values between the `asm!` blocks of one product.
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
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Linux's `arch_prctl` codes for the permission to use the tile state (XTILEDATA,
    /// state component 18), which a process must request before its first tile instruction.
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_GET_XCOMP_PERM: usize = 0x1022;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;

    impl Hardware {
        /// The tiles, when the CPU reports AMX-TILE and AMX-BF16 with palette 1 of 8 tiles of
        /// 16 rows × 64 bytes, and Linux grants this process the tile state (checked and asked
        /// once per process).
        pub fn new() -> Option<Hardware> {
            static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            let granted = *GRANTED.get_or_init(|| cpu_has_amx() && request_tile_state());
            granted.then_some(Hardware { started: false })
        }
    }

    // `__cpuid_count` is a safe function from Rust 1.94; the `unsafe` blocks keep 1.89 building.
    #[allow(unused_unsafe)]
    pub fn cpu_has_amx() -> bool {
        use std::arch::x86_64::__cpuid_count;
        // SAFETY: CPUID exists on every x86-64 CPU; leaves above the maximum are not queried.
        let max_leaf = unsafe { __cpuid_count(0, 0) }.eax;
        if max_leaf < 0x1d {
            return false;
        }
        // SAFETY: as above, leaf 7 ≤ max_leaf.
        let edx = unsafe { __cpuid_count(7, 0) }.edx;
        let (amx_bf16, amx_tile) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1);
        if !(amx_bf16 && amx_tile) {
            return false;
        }
        // SAFETY: as above, leaf 0x1d ≤ max_leaf. Palette 1's geometry: bytes per tile (EAX
        // high half), bytes per row (EBX low), tile count (EBX high), rows (ECX low).
        let palette = unsafe { __cpuid_count(0x1d, 1) };
        palette.eax >> 16 >= 1024
            && palette.ebx & 0xffff >= 64
            && palette.ebx >> 16 >= 8
            && palette.ecx & 0xffff >= 16
    }

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`, then reads the permission back.
    fn request_tile_state() -> bool {
        let granted = |ret: isize| ret == 0;
        let mut ret: isize;
        // SAFETY: the `arch_prctl` system call with these arguments only changes this process's
        // permission to use the tile state; it reads and writes no memory of ours. `syscall`
        // clobbers rcx and r11, declared.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        if !granted(ret) {
            return false;
        }
        let mut mask = 0u64;
        // SAFETY: as above; this code writes the permitted-features mask to `mask`, a valid u64.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_GET_XCOMP_PERM, in("rsi") &mut mask as *mut u64,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        granted(ret) && mask >> XFEATURE_XTILEDATA & 1 == 1
    }

    impl Tiles for Hardware {
        fn start(&mut self) {
            // SAFETY: `Hardware` exists only where the CPU has AMX and Linux granted the tile
            // state; `CONFIG` is a valid palette-1 configuration of 64 readable bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags)) };
            self.started = true;
        }

        fn finish(&mut self) {
            // SAFETY: as in `start`; releasing tiles touches no memory.
            unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
            self.started = false;
        }

        fn zero(&mut self, c: usize) {
            assert!(self.started, "amx: tiles used before start");
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

        fn load_a(&mut self, i: usize, src: &[u32], stride: usize) {
            assert!(self.started, "amx: tiles used before start");
            check_tile(src.len(), stride);
            let (p, s) = (src.as_ptr(), stride * 4);
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

        fn load_b(&mut self, j: usize, src: &[u32], stride: usize) {
            assert!(self.started, "amx: tiles used before start");
            check_tile(src.len(), stride);
            let (p, s) = (src.as_ptr(), stride * 4);
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
            assert!(self.started, "amx: tiles used before start");
            // SAFETY: tiles configured (asserted); touches no memory.
            unsafe {
                match (i, j) {
                    (0, 0) => asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem, preserves_flags)),
                    (0, _) => asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem, preserves_flags)),
                    (_, 0) => asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem, preserves_flags)),
                    _ => asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem, preserves_flags)),
                }
            }
        }

        fn store(&mut self, c: usize, dst: &mut [f32], stride: usize) {
            assert!(self.started, "amx: tiles used before start");
            check_tile(dst.len(), stride);
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

    // `TILE` is the geometry `CONFIG` sets.
    const _: () = assert!(TILE == 16);
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(feature = "scalar-only"))))]
mod hardware {
    use super::Tiles;

    /// No tiles on this platform (or build): [`Hardware::new`] is always `None`, so no value
    /// exists and the methods below are never reached.
    pub struct Hardware(());

    impl Hardware {
        /// Always `None` here.
        pub fn new() -> Option<Hardware> {
            None
        }
    }

    /// No tiles on this platform (or build).
    pub fn cpu_has_amx() -> bool {
        false
    }

    const NONE: &str = "no AMX tiles on this platform";

    impl Tiles for Hardware {
        fn start(&mut self) {
            unreachable!("{NONE}")
        }
        fn finish(&mut self) {
            unreachable!("{NONE}")
        }
        fn zero(&mut self, _: usize) {
            unreachable!("{NONE}")
        }
        fn load_a(&mut self, _: usize, _: &[u32], _: usize) {
            unreachable!("{NONE}")
        }
        fn load_b(&mut self, _: usize, _: &[u32], _: usize) {
            unreachable!("{NONE}")
        }
        fn dot(&mut self, _: usize, _: usize) {
            unreachable!("{NONE}")
        }
        fn store(&mut self, _: usize, _: &mut [f32], _: usize) {
            unreachable!("{NONE}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_computes_one_tile_product_as_defined() {
        // A = pairs (a, 2a) with a = r + p, B = pairs (b, -b) with b = p - c: each C[r][c] is
        // Σ_p (a·b − 2a·b) = −Σ_p (r + p)(p − c), small integers, exact in f32.
        let a: Vec<u32> = (0..TILE * TILE)
            .map(|i| {
                let v = ((i / TILE) + (i % TILE)) as f32;
                u32::from(bf16_bits(v)) | (u32::from(bf16_bits(2.0 * v)) << 16)
            })
            .collect();
        let b: Vec<u32> = (0..TILE * TILE)
            .map(|i| {
                let v = (i / TILE) as f32 - (i % TILE) as f32;
                u32::from(bf16_bits(v)) | (u32::from(bf16_bits(-v)) << 16)
            })
            .collect();
        let mut m = Model::default();
        m.start();
        m.zero(3);
        m.load_a(1, &a, TILE);
        m.load_b(1, &b, TILE);
        m.dot(1, 1);
        m.dot(1, 1);
        let mut out = vec![f32::NAN; TILE * 20];
        m.store(3, &mut out, 20);
        for r in 0..TILE {
            for c in 0..TILE {
                let want: i64 = (0..TILE as i64).map(|p| -2 * (r as i64 + p) * (p - c as i64)).sum();
                assert_eq!(out[r * 20 + c], want as f32, "[{r}][{c}]");
            }
            assert!(out[r * 20 + TILE..(r + 1) * 20].iter().all(|x| x.is_nan()), "row {r} stride gap");
        }
    }

    #[test]
    fn the_model_reads_bf16_denormals_as_zero() {
        assert_eq!(widen(0x0001), 0.0);
        assert_eq!(widen(0x8001).to_bits(), (-0.0f32).to_bits());
        assert_eq!(widen(0x3f80), 1.0);
        assert_eq!(widen(0xc020_0000 >> 16), -2.5);
    }

    fn bf16_bits(x: f32) -> u16 {
        // Small integers: exact in bf16.
        (x.to_bits() >> 16) as u16
    }

    /// The tiling, through the model, against the same bf16-rounded operands multiplied in f64:
    /// rows across the 16- and 32-row blocks, widths across one and two tiles and several
    /// panels, `k` odd and across tiles, output rows at a stride, accumulating and not.
    #[test]
    fn tiled_product_matches_the_rounded_operands() {
        for &(m, k, n, out_stride, acc) in &[
            (1, 1, 1, 1, false),
            (13, 7, 33, 40, true),
            (16, 32, 16, 16, false),
            (17, 33, 17, 17, true),
            (32, 64, 32, 35, false),
            (70, 384, 70, 70, true),
            (33, 1000, 100, 101, false),
        ] {
            let (ablock, b) = test_operands(m, k, n);
            assert_eq!(ablock.len(), m.div_ceil(TILE) * TILE * b.ks);
            let mut out: Vec<f32> = (0..m * out_stride).map(|i| (i % 7) as f32).collect();
            let before = out.clone();
            row_block(&mut Model::default(), &ablock, m, &b, &mut out, out_stride, acc);
            let wpair =
                |kk: usize, c: usize| b.data[(c / NR * b.ks + kk / 2) * NR + c % NR] >> (16 * (kk % 2));
            let apair = |r: usize, kk: usize| ablock[r * b.ks + kk / 2] >> (16 * (kk % 2));
            for i in 0..m {
                for j in 0..out_stride {
                    let got = out[i * out_stride + j];
                    if j >= n {
                        assert_eq!(got, before[i * out_stride + j], "({m},{k},{n}) [{i},{j}] past the width");
                        continue;
                    }
                    let terms = (0..k).map(|t| widen(apair(i, t)) as f64 * widen(wpair(t, j)) as f64);
                    let exact: f64 = terms.clone().sum();
                    let mag: f64 = terms.map(f64::abs).sum();
                    let base = if acc { before[i * out_stride + j] as f64 } else { 0.0 };
                    assert!(
                        (got as f64 - base - exact).abs() <= 1e-6 * (mag + base.abs()) + 1e-6,
                        "({m},{k},{n},{acc}) [{i},{j}] {got} vs {}",
                        base + exact
                    );
                }
            }
        }
    }

    /// Where the CPU and the OS allow the tiles, the instructions against the model (skipped
    /// elsewhere: AMD CPUs and Intel ones before Sapphire Rapids have no tiles).
    #[test]
    fn hardware_tiles_match_the_model() {
        let Some(mut hw) = Hardware::new() else {
            eprintln!("skipped: no AMX tiles on this CPU");
            return;
        };
        assert!(hardware_matches_model(&mut hw));
        for &(m, k, n) in &[(96, 384, 1536), (200, 1536, 384), (5, 32, 45)] {
            let (ablock, b) = test_operands(m, k, n);
            let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
            row_block(&mut hw, &ablock, m, &b, &mut got, n, false);
            row_block(&mut Model::default(), &ablock, m, &b, &mut want, n, false);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-5 * (k as f32 * 0.25 + 1.0), "({m},{k},{n}) #{i}: {g} vs {w}");
            }
        }
    }
}
