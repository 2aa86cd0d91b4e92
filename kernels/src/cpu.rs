//! What this CPU can run, detected once per process, and the kernels a caller's choice selects.
//!
//! Every kernel family of this crate is picked here, from CPU features alone: nothing is timed,
//! so the same flags on the same CPU always run the same arithmetic and produce the same bytes,
//! whether the machine is idle or loaded. A caller states what it wants with two values:
//!
//! - [`KernelChoice`]: the widest instruction family allowed (`Auto`: the widest this CPU has);
//!   it only changes speed, except where a narrower family rounds differently (MaxSim sums and
//!   matrix products in another order; the difference is within f32 summation error);
//! - [`Precision`]: the arithmetic of the dense matrix products (f32, or inputs rounded to
//!   bf16 with f32 sums).
//!
//! [`KernelChoice::resolve`] turns a choice into a [`Kernels`] table that the encoder, k-means,
//! search and the codec read.

use std::sync::OnceLock;

pub use crate::bf16::Bf16Dense;
use crate::detect::Isa;
use crate::maxsim;

/// The CPU features the kernels use, as detected for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// AVX2, FMA and F16C (x86-64).
    pub avx2: bool,
    /// AVX-512F on top of [`Features::avx2`].
    pub avx512: bool,
    /// AVX-512 BF16 and VL on top of [`Features::avx512`] (`vdpbf16ps`).
    pub avx512_bf16: bool,
    /// The CPU reports AMX-TILE and AMX-BF16 with the tile geometry the AMX kernel assumes.
    pub amx_present: bool,
    /// [`Features::amx_present`], Linux granted this process the tile state, and the tile
    /// instructions agreed with their definition on a few test products.
    pub amx_usable: bool,
    /// Advanced SIMD (aarch64).
    pub neon: bool,
}

impl Features {
    /// The features the kernels may use: [`Features::hardware`], or none at all in a build with
    /// the `scalar-only` cargo feature (which tests the portable paths on SIMD machines).
    pub fn get() -> Features {
        if cfg!(feature = "scalar-only") {
            Features::default()
        } else {
            Features::hardware()
        }
    }

    /// The features of this CPU, detected on the first call (the AMX check asks Linux for the
    /// tile state and runs a few tile products, once). Unaffected by `scalar-only`, so tests can
    /// still compare each compiled SIMD path with its portable oracle.
    pub fn hardware() -> Features {
        static DETECTED: OnceLock<Features> = OnceLock::new();
        *DETECTED.get_or_init(Features::detect)
    }

    fn detect() -> Features {
        let isa = Isa::hardware();
        let amx_present = isa.avx512_bf16 && crate::bf16::amx::present();
        let amx_usable = amx_present && crate::bf16::amx::usable();
        Features {
            avx2: isa.avx2,
            avx512: isa.avx512,
            avx512_bf16: isa.avx512_bf16,
            amx_present,
            amx_usable,
            neon: isa.neon,
        }
    }

    /// The features in words, e.g. `"avx2 avx512 avx512-bf16"` (`"portable"` when none).
    pub fn describe(&self) -> String {
        let names = [
            (self.avx2, "avx2"),
            (self.avx512, "avx512"),
            (self.avx512_bf16, "avx512-bf16"),
            (self.amx_usable, "amx"),
            (self.amx_present && !self.amx_usable, "amx(unusable)"),
            (self.neon, "neon"),
        ];
        let on: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if on.is_empty() {
            "portable".to_string()
        } else {
            on.join(" ")
        }
    }
}

/// The widest instruction family the kernels may use. Narrower families exist for A/B
/// measurements and to test the portable paths on a SIMD machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum KernelChoice {
    /// The widest family this CPU runs (AMX tiles for bf16 products where usable).
    #[default]
    Auto,
    /// Portable code only: scalar MaxSim, the general f32 product, element-wise loops compiled
    /// for the baseline target, no bf16 products.
    Portable,
    /// Up to AVX2 + FMA + F16C.
    Avx2,
    /// Up to AVX-512 (with BF16 where the CPU has it), never the AMX tiles.
    Avx512,
}

impl KernelChoice {
    /// Every choice, in the order of [`KernelChoice::name`]'s names for help texts.
    pub const ALL: [KernelChoice; 4] =
        [KernelChoice::Auto, KernelChoice::Portable, KernelChoice::Avx2, KernelChoice::Avx512];

    /// The choice's name: `auto`, `portable`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Auto => "auto",
            KernelChoice::Portable => "portable",
            KernelChoice::Avx2 => "avx2",
            KernelChoice::Avx512 => "avx512",
        }
    }

    /// Parses [`KernelChoice::name`]'s names.
    pub fn parse(name: &str) -> Option<KernelChoice> {
        KernelChoice::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The kernels this choice selects on this CPU.
    ///
    /// # Errors
    /// [`Unsupported`] when the choice names a family this CPU (or this build) cannot run.
    pub fn resolve(self) -> Result<Kernels, Unsupported> {
        let f = Features::get();
        let (simd256, simd512, tiles) = match self {
            KernelChoice::Auto => (f.avx2, f.avx512, f.amx_usable),
            KernelChoice::Portable => (false, false, false),
            KernelChoice::Avx2 if f.avx2 => (true, false, false),
            KernelChoice::Avx512 if f.avx512 => (true, true, false),
            KernelChoice::Avx2 | KernelChoice::Avx512 => return Err(Unsupported { choice: self }),
        };
        let maxsim = maxsim::Kernel::widest(simd256, simd512, f.neon && self == KernelChoice::Auto);
        let elementwise = if simd512 {
            Elementwise::Avx512
        } else if simd256 {
            Elementwise::Avx2
        } else {
            Elementwise::Generic
        };
        let f32_dense = if simd512 { F32Dense::Avx512Panels } else { F32Dense::General };
        let bf16_dense = if tiles {
            Some(Bf16Dense::Amx)
        } else if simd512 && f.avx512_bf16 {
            Some(Bf16Dense::Avx512)
        } else {
            None
        };
        Ok(Kernels { choice: self, maxsim, elementwise, f32_dense, bf16_dense })
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A [`KernelChoice`] this CPU cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported {
    /// What was asked for.
    pub choice: KernelChoice,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernels {}: this CPU (or this build) does not run them; it has: {}",
            self.choice,
            Features::get().describe()
        )
    }
}

impl std::error::Error for Unsupported {}

/// The builds of the element-wise passes (bias and activation, layer norm, softmax, the
/// codec's argmax and row combination). Every build computes the same bits: they are one source
/// compiled for several instruction sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Elementwise {
    /// Compiled for the baseline target.
    Generic,
    /// Compiled with AVX2 + FMA enabled.
    Avx2,
    /// Compiled with AVX-512 enabled.
    Avx512,
}

/// The f32 dense matrix product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum F32Dense {
    /// The `gemm` crate's product on the unpacked matrix.
    General,
    /// This crate's AVX-512 kernel on a right-hand side packed into panels.
    Avx512Panels,
}

/// The kernels one [`KernelChoice`] selects on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernels {
    /// The choice these came from.
    pub choice: KernelChoice,
    /// MaxSim.
    pub maxsim: maxsim::Kernel,
    /// The element-wise passes.
    pub elementwise: Elementwise,
    /// The f32 dense product.
    pub f32_dense: F32Dense,
    /// The bf16 dense product, where this CPU has one.
    pub bf16_dense: Option<Bf16Dense>,
}

impl Kernels {
    /// The kernels of [`KernelChoice::Auto`] (computed once per process).
    pub fn auto() -> Kernels {
        static AUTO: OnceLock<Kernels> = OnceLock::new();
        *AUTO.get_or_init(|| KernelChoice::Auto.resolve().expect("auto resolves on every CPU"))
    }

    /// Whether [`Precision`] `p` runs bf16 products with these kernels.
    pub fn runs_bf16(&self, p: Precision) -> bool {
        p.effective(self) == Precision::Bf16
    }

    /// The dense products these kernels run at precision `p`, in words.
    pub fn dense_name(&self, p: Precision) -> &'static str {
        match (p.effective(self), self.bf16_dense, self.f32_dense) {
            (Precision::Bf16, Some(Bf16Dense::Amx), _) => "bf16 (AMX tiles)",
            (Precision::Bf16, Some(Bf16Dense::Avx512), _) => "bf16 (AVX-512 BF16)",
            (_, _, F32Dense::Avx512Panels) => "f32 (AVX-512 panels)",
            _ => "f32 (gemm)",
        }
    }
}

impl Default for Kernels {
    fn default() -> Self {
        Kernels::auto()
    }
}

/// The arithmetic of dense matrix products: the encoder's and cross-encoder's layers, k-means'
/// assignment, and search's stage-1 centroid scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// f32 throughout: matches PyTorch within 1e-4 (the reference).
    #[default]
    F32,
    /// Inputs rounded to bf16 (8 significant bits), f32 sums, where the kernels have a bf16
    /// product; f32 elsewhere. Embeddings move by about 1e-3 (cosine to f32 above 0.9998).
    Bf16,
    /// `Bf16` where it is known to pay, decided by CPU features alone: the AMX tiles where they
    /// are usable (Intel Sapphire Rapids and later), or AVX-512 BF16 on a CPU without AMX (AMD
    /// Zen 4 and 5: about 1.75× the f32 rate). A CPU that has AMX whose tiles this process may
    /// not use runs f32 (its `vdpbf16ps` is no faster than its f32 FMAs). Else `F32`.
    Auto,
}

impl Precision {
    /// What the kernels `k` actually run for this request: `F32` or `Bf16`.
    pub fn effective(self, k: &Kernels) -> Precision {
        let f = Features::get();
        match (self, k.bf16_dense) {
            (Precision::F32, _) | (_, None) => Precision::F32,
            (Precision::Bf16, Some(_)) => Precision::Bf16,
            (Precision::Auto, Some(Bf16Dense::Amx)) => Precision::Bf16,
            (Precision::Auto, Some(Bf16Dense::Avx512)) if !f.amx_present => Precision::Bf16,
            (Precision::Auto, Some(Bf16Dense::Avx512)) => Precision::F32,
        }
    }

    /// The name used by flags and metadata: `f32`, `bf16`, `auto`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_resolves_everywhere_to_portable_kernels() {
        let k = KernelChoice::Portable.resolve().unwrap();
        assert_eq!(k.maxsim, maxsim::Kernel::Scalar);
        assert_eq!(k.elementwise, Elementwise::Generic);
        assert_eq!(k.f32_dense, F32Dense::General);
        assert_eq!(k.bf16_dense, None);
        assert_eq!(Precision::Auto.effective(&k), Precision::F32);
        assert_eq!(Precision::Bf16.effective(&k), Precision::F32);
    }

    #[test]
    fn choices_follow_the_features() {
        let f = Features::get();
        assert_eq!(KernelChoice::Avx2.resolve().is_ok(), f.avx2);
        assert_eq!(KernelChoice::Avx512.resolve().is_ok(), f.avx512);
        let auto = Kernels::auto();
        assert!(auto.maxsim.is_available());
        assert_eq!(auto.bf16_dense.is_some(), f.avx512_bf16);
        if let Ok(k) = KernelChoice::Avx512.resolve() {
            assert_ne!(k.bf16_dense, Some(Bf16Dense::Amx));
        }
        for c in KernelChoice::ALL {
            assert_eq!(KernelChoice::parse(c.name()), Some(c));
        }
        // The same choice always resolves to the same table (no timing involved).
        assert_eq!(KernelChoice::Auto.resolve().unwrap(), Kernels::auto());
    }
}
