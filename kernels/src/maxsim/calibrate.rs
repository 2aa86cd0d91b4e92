//! Machine calibration for benchmarks: the single-core FMA peak of a kernel's vector width.
//!
//! The MaxSim kernels are FMA-bound, so their GFLOP/s is best read as a fraction of this peak.
//! It lives here because the measurement needs the same intrinsics as the kernels.

use std::hint::black_box;
use std::time::Instant;

use super::Kernel;

/// Independent accumulator chains: enough to hide a 4-cycle FMA latency at 2 FMAs per cycle,
/// and few enough to stay in the 16 AVX2 registers with the two operands.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHAINS: usize = 12;

/// Measures the single-thread FMA throughput of `kernel`'s vector width in GFLOP/s (an FMA is
/// two flops), running `iterations` rounds of [`CHAINS`]-many independent vector FMAs after a
/// short warm-up. `None` for kernels without a calibration loop (scalar, NEON) or that this CPU
/// cannot run.
pub fn fma_peak_gflops(kernel: Kernel, iterations: u64) -> Option<f64> {
    if !kernel.is_available() {
        return None;
    }
    let run: fn(u64) -> (f32, usize) = match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => |n| {
            // SAFETY: `is_available` confirmed AVX-512F above.
            (unsafe { x86::chains_512(n, black_box(1.0)) }, 16)
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => |n| {
            // SAFETY: `is_available` confirmed AVX2 and FMA above.
            (unsafe { x86::chains_256(n, black_box(1.0)) }, 8)
        },
        _ => return None,
    };
    black_box(run(iterations / 10 + 1));
    let started = Instant::now();
    let (sink, lanes) = run(iterations);
    let seconds = started.elapsed().as_secs_f64();
    black_box(sink);
    let flops = iterations as f64 * (CHAINS * lanes * 2) as f64;
    Some(flops / seconds / 1e9)
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"] // AVX-512 intrinsics: see the note in `maxsim/mod.rs`.
mod x86 {
    use core::arch::x86_64::*;

    use super::CHAINS;

    /// `n` rounds of [`CHAINS`] independent 16-lane FMAs; returns a value depending on all.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn chains_512(n: u64, seed: f32) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(seed); CHAINS];
        for _ in 0..n {
            for c in acc.iter_mut() {
                *c = _mm512_fmadd_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
    }

    /// `n` rounds of [`CHAINS`] independent 8-lane FMAs; returns a value depending on all.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains_256(n: u64, seed: f32) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(seed); CHAINS];
        for _ in 0..n {
            for c in acc.iter_mut() {
                *c = _mm256_fmadd_ps(*c, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        let mut total = 0.0;
        for c in acc {
            // SAFETY: `lanes` holds exactly 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), c) };
            total += lanes.iter().sum::<f32>();
        }
        total
    }
}
