//! MaxSim scoring: `Σ_q max_d q·d` over f16 (or f32) document tokens with f32 accumulation.
//!
//! The kernel is chosen once per process from the CPU's features (see [`Kernel::detect`]);
//! every SIMD path is tested against the scalar oracle in [`scalar`].
//!
//! # Kernel design
//!
//! [`PreparedQuery::new`] packs the query once into *strips* of [`STRIP`] query tokens,
//! transposed so that for every dimension `k` the strip's 16 values `q[0..16][k]` are contiguous
//! (zero-padded past the last token). The SIMD kernels walk the document in blocks of a few rows
//! (8 for AVX-512, 6 for AVX2 and NEON), widen f16 rows into a small f32 scratch buffer owned by
//! the [`Scorer`], and run a register-blocked micro-kernel: one accumulator vector per
//! (document row, query-lane vector), and for each `k` one load of the query vectors, one
//! broadcast of each row's `k`-th value and one FMA per accumulator. The block's dot products
//! then fold into running per-query-token maxima with element-wise `max`; the only horizontal
//! work is the final sum over the real (unpadded) query tokens, done in query order.
//!
//! A short last block repeats its last row, which leaves every maximum unchanged.

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod calibrate;
pub mod scalar;

// AVX-512 intrinsics and `#[target_feature(enable = "avx512f")]` are stable from Rust 1.89, and
// calling value-only intrinsics safely inside `#[target_feature]` functions from 1.86: these
// modules need rust-version >= 1.89 (the workspace's).
#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"]
mod avx512;
#[cfg(target_arch = "aarch64")]
#[clippy::msrv = "1.89"]
mod neon;
#[cfg(test)]
mod tests;

use half::f16;

use crate::detect::Isa;

/// Query tokens per packed strip (one AVX-512 register of f32, two AVX2, four NEON).
pub const STRIP: usize = 16;

/// A MaxSim implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable scalar code: the oracle.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C, 8 f32 lanes.
    Avx2,
    /// x86_64 AVX-512F (with AVX2, FMA and F16C), 16 f32 lanes.
    Avx512,
    /// aarch64 Advanced SIMD, 4 f32 lanes.
    Neon,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 4] = [Kernel::Scalar, Kernel::Neon, Kernel::Avx2, Kernel::Avx512];

    /// The kernel `Kernels::auto` picks: the fastest this CPU supports, detected
    /// on the first call and cached for the life of the process.
    ///
    /// With the `scalar-only` cargo feature this is always [`Kernel::Scalar`].
    pub fn detect() -> Kernel {
        let isa = Isa::get();
        Kernel::widest(isa.avx2, isa.avx512, isa.neon)
    }

    /// The fastest kernel of the families allowed: AVX-512, then AVX2, then NEON, else scalar.
    pub fn widest(avx2: bool, avx512: bool, neon: bool) -> Kernel {
        if avx512 {
            Kernel::Avx512
        } else if avx2 {
            Kernel::Avx2
        } else if neon {
            Kernel::Neon
        } else {
            Kernel::Scalar
        }
    }

    /// Every kernel this CPU can run, scalar first. Unaffected by the `scalar-only` feature, so
    /// tests can still compare each compiled path with the oracle.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.iter().copied().filter(|k| k.is_available()).collect()
    }

    /// Whether this CPU (and this build's target architecture) can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            Kernel::Avx2 => avx2_available(),
            Kernel::Avx512 => avx512_available(),
            Kernel::Neon => neon_available(),
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }
}

fn avx2_available() -> bool {
    Isa::hardware().avx2
}

fn avx512_available() -> bool {
    Isa::hardware().avx512
}

fn neon_available() -> bool {
    Isa::hardware().neon
}

/// A query prepared for scoring many documents.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    tokens: Vec<f32>,
    /// `strips × dim × STRIP`: strip `s`, dimension `k`, lane `j` at `(s·dim + k)·STRIP + j`.
    packed: Vec<f32>,
    len: usize,
    dim: usize,
    /// The query split for the AMX tiles, made on first use by a scorer that runs on them.
    #[cfg(target_arch = "x86_64")]
    split: std::sync::OnceLock<amx::SplitQuery>,
}

impl PreparedQuery {
    /// Prepares a row-major `[len × dim]` query.
    ///
    /// # Panics
    /// If `tokens.len()` is not a multiple of `dim`, or `dim` is zero.
    pub fn new(tokens: &[f32], dim: usize) -> Self {
        assert!(dim > 0 && tokens.len().is_multiple_of(dim), "query shape");
        let len = tokens.len() / dim;
        let strips = len.div_ceil(STRIP);
        let mut packed = vec![0.0f32; strips * dim * STRIP];
        for (i, token) in tokens.chunks_exact(dim).enumerate() {
            let (s, j) = (i / STRIP, i % STRIP);
            for (k, &x) in token.iter().enumerate() {
                packed[(s * dim + k) * STRIP + j] = x;
            }
        }
        Self {
            tokens: tokens.to_vec(),
            packed,
            len,
            dim,
            #[cfg(target_arch = "x86_64")]
            split: std::sync::OnceLock::new(),
        }
    }

    /// Number of query tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the query has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The row-major tokens.
    pub fn tokens(&self) -> &[f32] {
        &self.tokens
    }

    /// Number of packed strips of [`STRIP`] query tokens (the last one zero-padded).
    pub fn strips(&self) -> usize {
        self.len.div_ceil(STRIP)
    }

    fn panel(&self) -> Panel<'_> {
        Panel { packed: &self.packed, dim: self.dim, strips: self.strips() }
    }
}

/// The packed query as the SIMD kernels see it.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
#[derive(Clone, Copy)]
struct Panel<'a> {
    packed: &'a [f32],
    dim: usize,
    strips: usize,
}

/// A document in either storage type; row-major `[rows × dim]`.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
#[derive(Clone, Copy)]
enum Doc<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
impl Doc<'_> {
    fn len(self) -> usize {
        match self {
            Doc::F16(d) => d.len(),
            Doc::F32(d) => d.len(),
        }
    }
}

/// Checks the shapes every SIMD kernel relies on; the kernels call it before touching memory.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
fn check_shapes(panel: &Panel<'_>, doc: Doc<'_>, scratch: &[f32], rows: usize, best: &[f32]) -> usize {
    let dim = panel.dim;
    assert!(dim > 0, "dim must be positive");
    assert_eq!(panel.packed.len(), panel.strips * dim * STRIP, "packed query shape");
    assert_eq!(best.len(), panel.strips * STRIP, "maxima buffer shape");
    assert!(scratch.len() >= rows * dim, "scratch too small");
    assert_eq!(doc.len() % dim, 0, "document length is not a multiple of dim");
    doc.len() / dim
}

/// Whether [`Scorer::new`] scores batches of f16 documents on the AMX tiles: the CPU has AMX
/// and AVX-512 BF16, and this process may use the tiles (decided once per process; a cached
/// read after the first call, so scorers made per query or per block cost no CPUID).
pub fn tiles_usable() -> bool {
    let isa = Isa::get();
    // `amx::usable` checks the CPU's AMX report itself and caches its answer.
    cfg!(target_arch = "x86_64") && isa.avx512 && isa.avx512_bf16 && crate::bf16::amx::usable()
}

/// Scores documents against one query with the process-wide kernel, reusing scratch space.
#[derive(Debug)]
pub struct Scorer<'q> {
    query: &'q PreparedQuery,
    kernel: Kernel,
    /// f32 copies of one block of f16 document rows.
    scratch: Vec<f32>,
    /// Running per-query-token maxima, `strips × STRIP`.
    best: Vec<f32>,
    /// Whether batches of f16 documents run on the AMX tiles ([`Scorer::score_f16_many`]).
    tiles: bool,
    /// The tiles' block buffers.
    #[cfg(target_arch = "x86_64")]
    amx: amx::Buffers,
}

/// The most document rows any kernel converts at once.
const MAX_BLOCK_ROWS: usize = 8;

impl<'q> Scorer<'q> {
    /// A scorer using the detected kernel, and for batches of f16 documents the AMX tiles where
    /// this process may use them (see [`Scorer::with_tiles`]).
    pub fn new(query: &'q PreparedQuery) -> Self {
        let kernel = Kernel::detect();
        if kernel == Kernel::Avx512 {
            if let Some(scorer) = Self::with_tiles(query) {
                return scorer;
            }
        }
        Self::with_kernel(query, kernel)
    }

    /// A scorer whose [`Scorer::score_f16_many`] runs on the AMX tiles (exactly: see below), and
    /// whose other calls run the AVX-512 kernel; `None` where the CPU has no usable tiles.
    ///
    /// The tiles multiply bf16 only. Each f16 document value is split into two bf16 parts and
    /// each f32 query value into three, whose sums are the values exactly, and all six products
    /// per dimension are accumulated in f32: the products are exact and a dot product is within
    /// f32 summation error of the exact one, as with the other kernels.
    pub fn with_tiles(query: &'q PreparedQuery) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if tiles_usable() {
            let mut scorer = Self::try_with_kernel(query, Kernel::Avx512)?;
            scorer.tiles = true;
            return Some(scorer);
        }
        let _ = query;
        None
    }

    /// Whether [`Scorer::score_f16_many`] runs on the AMX tiles.
    pub fn uses_tiles(&self) -> bool {
        self.tiles
    }

    /// MaxSim of the query against each of `docs` (row-major `[n × dim]` f16), into `scores`:
    /// the same scores as [`Scorer::score_f16`] on each, or on the AMX tiles where this scorer
    /// uses them (within f32 summation error of the other kernels; a document scores the same
    /// bits whichever documents share its batch).
    ///
    /// # Panics
    /// If `scores` is not as long as `docs`, or a document's length is not a multiple of `dim`.
    pub fn score_f16_many(&mut self, docs: &[&[f16]], scores: &mut [f32]) {
        assert_eq!(docs.len(), scores.len(), "one score per document");
        #[cfg(target_arch = "x86_64")]
        if self.tiles {
            if let Some(mut tiles) = crate::bf16::amx::Hardware::new() {
                let query = self.query;
                let split = query.split.get_or_init(|| amx::SplitQuery::new(&query.tokens, query.dim));
                amx::maxsim_many(&mut tiles, split, query.dim, docs, scores, &mut self.best, &mut self.amx);
                return;
            }
        }
        for (doc, score) in docs.iter().zip(scores.iter_mut()) {
            *score = self.score_f16(doc);
        }
    }

    /// A scorer using a given kernel (for tests and benchmarks).
    ///
    /// # Panics
    /// If this CPU cannot run `kernel` (see [`Kernel::is_available`]).
    pub fn with_kernel(query: &'q PreparedQuery, kernel: Kernel) -> Self {
        match Self::try_with_kernel(query, kernel) {
            Some(scorer) => scorer,
            None => panic!("MaxSim kernel {} is not available on this CPU", kernel.name()),
        }
    }

    /// A scorer using a given kernel, or `None` if this CPU cannot run it.
    pub fn try_with_kernel(query: &'q PreparedQuery, kernel: Kernel) -> Option<Self> {
        if !kernel.is_available() {
            return None;
        }
        let (scratch, best) = match kernel {
            Kernel::Scalar => (Vec::new(), Vec::new()),
            _ => (vec![0.0; MAX_BLOCK_ROWS * query.dim], vec![0.0; query.strips() * STRIP]),
        };
        Some(Self {
            query,
            kernel,
            scratch,
            best,
            tiles: false,
            #[cfg(target_arch = "x86_64")]
            amx: amx::Buffers::default(),
        })
    }

    /// The kernel this scorer runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The query being scored.
    pub fn query(&self) -> &'q PreparedQuery {
        self.query
    }

    /// MaxSim of the query against a row-major `[n × dim]` f16 document. An empty document (or
    /// an empty query) scores 0.
    ///
    /// # Panics
    /// If `doc.len()` is not a multiple of the query's `dim`.
    pub fn score_f16(&mut self, doc: &[f16]) -> f32 {
        self.score(Doc::F16(doc))
    }

    /// MaxSim of the query against a row-major `[n × dim]` f32 document (for example decompressed
    /// residuals). An empty document (or an empty query) scores 0.
    ///
    /// # Panics
    /// If `doc.len()` is not a multiple of the query's `dim`.
    pub fn score_f32(&mut self, doc: &[f32]) -> f32 {
        self.score(Doc::F32(doc))
    }

    fn score(&mut self, doc: Doc<'_>) -> f32 {
        let dim = self.query.dim();
        assert_eq!(doc.len() % dim, 0, "document length is not a multiple of dim");
        if doc.len() == 0 || self.query.is_empty() {
            return 0.0;
        }
        let panel = self.query.panel();
        match self.kernel {
            Kernel::Scalar => {
                return match doc {
                    Doc::F16(d) => scalar::maxsim_f16(self.query.tokens(), d, dim),
                    Doc::F32(d) => scalar::maxsim_f32(self.query.tokens(), d, dim),
                };
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // SAFETY: a Scorer only holds a kernel that `is_available` approved at
                // construction, so the CPU has AVX2, FMA and F16C.
                unsafe { avx2::maxsim(panel, doc, &mut self.scratch, &mut self.best) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                // SAFETY: a Scorer only holds a kernel that `is_available` approved at
                // construction, so the CPU has AVX-512F, AVX2, FMA and F16C.
                unsafe { avx512::maxsim(panel, doc, &mut self.scratch, &mut self.best) }
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => {
                // SAFETY: a Scorer only holds a kernel that `is_available` approved at
                // construction, so the CPU has NEON.
                unsafe { neon::maxsim(panel, doc, &mut self.scratch, &mut self.best) }
            }
            #[allow(unreachable_patterns)]
            other => unreachable!("kernel {} is not compiled for this target", other.name()),
        }
        let _ = panel;
        // Sum the real query tokens in query order (the oracle's order); padding lanes are skipped.
        self.best[..self.query.len()].iter().sum()
    }
}
