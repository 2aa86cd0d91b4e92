//! The instruction sets this CPU reports, detected once per process: the bottom of this crate's
//! module graph. Every kernel checks it before running target-specific code, and
//! [`crate::cpu`] builds its feature report and kernel table on it (adding the AMX check, which
//! needs the bf16 kernels).

use std::sync::OnceLock;

/// Instruction sets the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Isa {
    /// AVX2, FMA and F16C (x86-64).
    pub(crate) avx2: bool,
    /// AVX-512F on top of `avx2`.
    pub(crate) avx512: bool,
    /// AVX-512BW (16-bit integer lanes) on top of `avx512`.
    pub(crate) avx512bw: bool,
    /// AVX-512 VBMI (byte permutes) on top of `avx512bw`.
    pub(crate) avx512vbmi: bool,
    /// AVX-512 VNNI (8-bit dot products into 32-bit lanes) on top of `avx512bw`.
    pub(crate) avx512vnni: bool,
    /// AVX-512 BF16 and VL on top of `avx512`.
    pub(crate) avx512_bf16: bool,
    /// Advanced SIMD (aarch64).
    pub(crate) neon: bool,
}

impl Isa {
    /// What this CPU reports, unaffected by the `scalar-only` feature.
    pub(crate) fn hardware() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(Isa::detect)
    }

    /// What the kernels may use: [`Isa::hardware`], or nothing in a `scalar-only` build.
    pub(crate) fn get() -> Isa {
        if cfg!(feature = "scalar-only") {
            Isa::default()
        } else {
            Isa::hardware()
        }
    }

    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            let avx512 = avx2 && has!("avx512f");
            let avx512bw = avx512 && has!("avx512bw");
            let avx512vbmi = avx512bw && has!("avx512vbmi");
            let avx512vnni = avx512bw && has!("avx512vnni");
            let avx512_bf16 = avx512 && has!("avx512vl") && has!("avx512bf16");
            Isa { avx2, avx512, avx512bw, avx512vbmi, avx512vnni, avx512_bf16, neon: false }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Isa { neon: std::arch::is_aarch64_feature_detected!("neon"), ..Isa::default() }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Isa::default()
        }
    }
}
