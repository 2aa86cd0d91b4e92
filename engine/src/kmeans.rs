//! Seeded, reproducible k-means over a sample of token embeddings, and fast nearest-centroid
//! assignment.
//!
//! Assignment of `n` vectors to `k` centroids is one matrix product per block of vectors and
//! chunk of centroids, against the chunk's transpose packed once per call (`kernels::packed`:
//! AVX-512 panels where the kernels table has them, else the `gemm` crate), followed by a
//! per-row arg-max. The nearest centroid in Euclidean distance maximises `x·c − ‖c‖²/2`, which
//! reduces to the largest dot product when centroids are unit vectors.
//!
//! Training is Lloyd's algorithm, its assignments computed in bf16 where the CPU's features say
//! bf16 products pay (`kernels::Precision::Auto`; a near-tie may then go to the other
//! centroid, which moves centroids negligibly); [`assign`] is always f32. Results depend only on
//! the input, the config, the seed and the CPU's kernels, never on the thread count: each row's
//! assignment is computed independently, and the centroid sums are accumulated in f64 in row
//! order.
//!
//! Memory is bounded by the sample plus `k × dim` centroids and a 1 MiB block of scores per
//! thread.

use std::cell::RefCell;

use half::f16;
use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::rng::Rng;
use crate::synth::normalize;
use kernels::bf16::{self, PackedB};
use kernels::cpu::{Bf16Dense, Kernels};
use kernels::int8::{self, I8Columns, I8Rows};
use kernels::ops::Mat;
use kernels::packed::{matmul_packed, PackedMat};

/// How initial centroids are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// `k` distinct sample vectors chosen uniformly (what Stanford ColBERT does).
    Random,
    /// k-means++ (D² sampling), run on a uniform subsample of at most `pool` vectors so that its
    /// sequential `k` steps stay affordable for large `k` (cost `k × pool × dim`).
    KMeansPlusPlus {
        /// Size of the subsample the seeding runs on; at least `k` is used.
        pool: usize,
    },
}

/// k-means settings. [`KMeansConfig::new`] gives the defaults for a given `k`.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of centroids. Clamped to the number of sample vectors when there are fewer.
    pub k: usize,
    /// Most Lloyd iterations; training stops earlier when no assignment changes.
    pub max_iters: usize,
    /// Initialisation.
    pub init: Init,
    /// Renormalise centroids to unit length after every update (spherical k-means, suited to
    /// L2-normalised embeddings and to max-dot-product search).
    pub spherical: bool,
    /// Seed for initialisation and for re-seeding empty clusters.
    pub seed: u64,
    /// The kernels of the products. Lloyd's assignments run in bf16 where these kernels have
    /// a bf16 product that [`kernels::Precision::Auto`] picks (a near-tie may then go the other
    /// way, which moves a centroid by a negligible amount); the final assignment ([`assign`])
    /// is f32.
    pub kernels: Kernels,
}

impl KMeansConfig {
    /// Defaults: 10 iterations, random init, spherical, seed 0, [`Kernels::auto`].
    pub fn new(k: usize) -> Self {
        KMeansConfig {
            k,
            max_iters: 10,
            init: Init::Random,
            spherical: true,
            seed: 0,
            kernels: Kernels::auto(),
        }
    }
}

/// Number of centroids for an index of `n_tokens` embeddings:
/// `2^floor(log2(16·sqrt(n_tokens)))` (the Stanford ColBERT rule), at least 1.
pub fn default_num_centroids(n_tokens: usize) -> usize {
    let x = 16.0 * (n_tokens as f64).sqrt();
    if x < 2.0 {
        return 1;
    }
    1usize << (x.log2().floor() as u32)
}

/// The largest power of two at most `n` (1 for 0).
pub fn floor_pow2(n: usize) -> usize {
    if n <= 1 {
        1
    } else {
        1usize << n.ilog2()
    }
}

/// Number of documents whose tokens k-means should be trained on for an index of `n_docs`
/// documents: `min(n_docs, ceil(16·sqrt(120·n_docs)))`.
pub fn default_sample_docs(n_docs: usize) -> usize {
    let s = (16.0 * (120.0 * n_docs as f64).sqrt()).ceil() as usize;
    s.min(n_docs)
}

/// Trained centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    centroids: Vec<f32>,
    dim: usize,
    iterations: usize,
}

impl KMeans {
    /// Row-major `[k × dim]` centroids.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Takes the centroids out.
    pub fn into_centroids(self) -> Vec<f32> {
        self.centroids
    }

    /// Number of centroids (may be less than the requested `k`: see [`KMeansConfig::k`]).
    pub fn k(&self) -> usize {
        self.centroids.len() / self.dim
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Lloyd iterations actually run.
    pub fn iterations(&self) -> usize {
        self.iterations
    }
}

/// Checks that `data` is a non-empty `[n × dim]` matrix of finite numbers; returns `n`.
pub(crate) fn check_matrix(data: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(EngineError::InvalidArgument(format!("{what}: dimension must be positive")));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(EngineError::InvalidArgument(format!(
            "{what}: length {} is not a multiple of dimension {dim}",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(EngineError::NonFinite { what: what.to_string(), row: i / dim, col: i % dim });
    }
    Ok(data.len() / dim)
}

thread_local! {
    /// Per-thread score block of [`assign`].
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rounds every value to the nearest f16 and back, in place. Apply this to centroids before
/// computing residuals when the index stores centroids as f16, so that decoding against the
/// stored centroids reproduces what was encoded.
pub fn round_to_f16(values: &mut [f32]) {
    values.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
}

/// Converts centroids to f16 for storage.
pub fn to_f16(values: &[f32]) -> Vec<f16> {
    values.iter().map(|&x| f16::from_f32(x)).collect()
}

/// For each row of `vectors` (`[n × dim]`), the index of the nearest row of `centroids`
/// (`[k × dim]`) in Euclidean distance; ties go to the lower index.
///
/// # Errors
/// [`EngineError::InvalidArgument`] on shape errors or no centroids; [`EngineError::NonFinite`]
/// if `centroids` holds NaN or infinity (vectors are not scanned, for speed: a non-finite vector
/// gets an arbitrary code).
pub fn assign(vectors: &[f32], centroids: &[f32], dim: usize) -> Result<Vec<u32>> {
    let mut codes = Vec::new();
    assign_into(vectors, centroids, dim, Precision::F32, &Kernels::auto(), &mut codes)?;
    Ok(codes)
}

/// The codes of [`assign`], bit for bit, from cheaper products where the CPU has one: 8-bit
/// products (AVX-512 VNNI: about twice bf16's rate), else bf16 products (AMX, or AVX-512 BF16:
/// about 1.75× the f32 rate on Zen 4). Every centroid is scored from rounded inputs, the few
/// within the rounding's bound of the best are scored again exactly as [`assign`] scores them
/// (one multiply-add chain in dimension order, then minus the half norm), and the best of those
/// wins, ties to the lower index: the nearest centroid is always among those re-scored.
///
/// The bounds: rounding both inputs to bf16 moves each product by at most 2⁻⁸ of its size, so a
/// score by at most `2⁻⁸ · ‖x‖ · ‖c‖` (Cauchy–Schwarz). Quantising each vector to 8 bits
/// symmetrically (`x ≈ s_x · i`, `|i| ≤ 127`, `s_x = max|x| / 127`) moves each value by at most
/// half a step, so a score by at most `‖x‖₁ · s_c / 2 + ‖c‖₁ · s_x / 2 + dim · s_x · s_c / 4`,
/// taken with the largest `s_c` and `‖c‖₁` of any centroid. Elsewhere, and for vectors with a
/// non-finite value, it is [`assign`].
///
/// # Errors
/// As [`assign`].
pub fn assign_checked(vectors: &[f32], centroids: &[f32], dim: usize) -> Result<Vec<u32>> {
    CheckedAssigner::new(centroids, dim)?.assign(vectors)
}

/// [`assign_checked`] prepared once for a set of centroids (their rounded packing, half norms
/// and the sizes its bound needs), for a caller that assigns many batches to the same
/// centroids.
pub struct CheckedAssigner {
    centroids: Vec<f32>,
    dim: usize,
    /// `None` where the kernels have no fast rounded product: then it is [`assign`].
    fast: Option<Prepared>,
}

/// The rounded products a [`CheckedAssigner`] scores with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// 8-bit products (AVX-512 VNNI).
    Int8,
    /// bf16 products (AMX or AVX-512 BF16).
    Bf16,
}

/// What [`CheckedAssigner`] computes once.
struct Prepared {
    kernels: Kernels,
    /// `‖c‖²/2` per centroid, summed as [`assign`] sums it (the same bits).
    half_norms: Vec<f32>,
    /// The largest centroid norm.
    largest: f64,
    products: Products,
}

/// The centroids packed for the rounded product, in chunks of [`CHECKED_CHUNK`].
enum Products {
    Bf16(Vec<Chunk>),
    Int8 {
        chunks: Vec<I8Columns>,
        /// The largest 8-bit step of any centroid.
        step: f64,
        /// The largest `‖c‖₁` of any centroid.
        l1: f64,
    },
}

/// One block of vectors' side of [`Products`].
enum BlockProducts<'a> {
    Bf16(&'a [Chunk]),
    Int8(&'a [I8Columns], I8Rows),
}

/// Centroids per packed chunk of [`CheckedAssigner`] (as [`assign`]'s).
const CHECKED_CHUNK: usize = 256;

impl CheckedAssigner {
    /// Prepares assignment to `centroids` (row-major `[k × dim]`), scoring with the CPU's
    /// fastest rounded product: bf16 on the AMX tiles where the process may use them, else 8-bit
    /// products where the CPU has AVX-512 VNNI (twice AVX-512 BF16's rate), else bf16.
    ///
    /// # Errors
    /// As [`assign`] for bad centroids.
    pub fn new(centroids: &[f32], dim: usize) -> Result<CheckedAssigner> {
        let amx = kernels::cpu::Features::get().amx_usable;
        let rounding = if int8::fast() && !amx { Rounding::Int8 } else { Rounding::Bf16 };
        Self::with_rounding(centroids, dim, Some(rounding))
    }

    /// [`CheckedAssigner::new`] with the rounded product chosen by the caller (`None`: the f32
    /// assignment); one the CPU has no fast kernel for is not used.
    ///
    /// # Errors
    /// As [`assign`] for bad centroids.
    pub fn with_rounding(
        centroids: &[f32],
        dim: usize,
        rounding: Option<Rounding>,
    ) -> Result<CheckedAssigner> {
        // The shape and value checks of `assign`.
        assign(&[], centroids, dim)?;
        let kernels = Kernels::auto();
        let rounding = rounding.filter(|r| match r {
            Rounding::Int8 => int8::fast(),
            Rounding::Bf16 => kernels.bf16_dense.is_some(),
        });
        // The exact re-check is `packed::dot_chain`, which is `assign`'s arithmetic only with
        // AVX-512.
        let rounding = rounding.filter(|_| kernels::packed::use_avx512());
        let fast = rounding.map(|rounding| {
            let rows = || centroids.chunks_exact(dim);
            let products = match rounding {
                Rounding::Bf16 => Products::Bf16(
                    centroids
                        .chunks(CHECKED_CHUNK * dim)
                        .map(|c| Chunk::pack(c, dim, Precision::Bf16, &kernels))
                        .collect(),
                ),
                Rounding::Int8 => Products::Int8 {
                    chunks: centroids
                        .chunks(CHECKED_CHUNK * dim)
                        .map(|c| I8Columns::new(c, c.len() / dim, dim))
                        .collect(),
                    step: rows().map(|c| f64::from(int8::step(c))).fold(0.0, f64::max),
                    l1: rows()
                        .map(|c| c.iter().map(|&v| f64::from(v.abs())).sum::<f64>())
                        .fold(0.0, f64::max),
                },
            };
            Prepared {
                half_norms: rows().map(|c| 0.5 * c.iter().map(|x| x * x).sum::<f32>()).collect(),
                largest: rows()
                    .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt())
                    .fold(0.0f64, f64::max),
                products,
                kernels,
            }
        });
        Ok(CheckedAssigner { centroids: centroids.to_vec(), dim, fast })
    }

    /// The rounded product this assigner scores with (`None`: the f32 assignment).
    pub fn rounding(&self) -> Option<Rounding> {
        self.fast.as_ref().map(|p| match p.products {
            Products::Bf16(_) => Rounding::Bf16,
            Products::Int8 { .. } => Rounding::Int8,
        })
    }

    /// The codes of [`assign`] for `vectors` (`[n × dim]`).
    ///
    /// # Errors
    /// As [`assign`] for a shape error.
    pub fn assign(&self, vectors: &[f32]) -> Result<Vec<u32>> {
        let (centroids, dim) = (&self.centroids[..], self.dim);
        let Some(Prepared { kernels, half_norms, largest, products }) = &self.fast else {
            return assign(vectors, centroids, dim);
        };
        if !vectors.len().is_multiple_of(dim) {
            return assign(vectors, centroids, dim);
        }
        let (k, largest) = (centroids.len() / dim, *largest);
        const ROWS: usize = 1024;
        let mut codes = vec![0u32; vectors.len() / dim];
        vectors.par_chunks(ROWS * dim).zip(codes.par_chunks_mut(ROWS)).try_for_each(|(block, out)| {
            let m = block.len() / dim;
            // Per vector: the bound on its rounded scores' error (doubled: two scores are
            // compared, with a relative margin for the f32 arithmetic), the best rounded score so
            // far, and the centroids within the bound of it.
            let bound: Vec<f64> = block
                .chunks_exact(dim)
                .map(|x| {
                    let norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
                    let error = match products {
                        Products::Bf16(_) => (1.0 / 256.0) * norm * largest,
                        Products::Int8 { step, l1, .. } => {
                            let x_l1: f64 = x.iter().map(|&v| f64::from(v.abs())).sum();
                            let x_step = f64::from(int8::step(x));
                            x_l1 * step / 2.0
                                + l1 * x_step / 2.0
                                + dim as f64 * x_step * step / 4.0
                                + 1e-6 * norm * largest
                        }
                    };
                    2.0 * error * 1.01 + 1e-6
                })
                .collect();
            // The block in 8 bits, once for every chunk.
            let block_products = match products {
                Products::Bf16(chunks) => BlockProducts::Bf16(chunks),
                Products::Int8 { chunks, .. } => BlockProducts::Int8(chunks, I8Rows::new(block, m, dim)),
            };
            let mut best = vec![f32::NEG_INFINITY; m];
            let mut near: Vec<Vec<(f32, u32)>> = vec![Vec::new(); m];
            // The chunk's scores in the thread's reused buffer (as `assign`'s).
            let mut buf = SCORES.with(|b| std::mem::take(&mut *b.borrow_mut()));
            buf.resize(buf.len().max(m * CHECKED_CHUNK), 0.0);
            for (i, c0) in (0..k).step_by(CHECKED_CHUNK).enumerate() {
                let cc = CHECKED_CHUNK.min(k - c0);
                let scores = &mut buf[..m * cc];
                match &block_products {
                    BlockProducts::Int8(chunks, rows) => int8::scores(rows, 0, &chunks[i], scores),
                    BlockProducts::Bf16(chunks) => chunks[i].scores(block, m, scores),
                }
                for (r, row) in scores.chunks_exact(cc).enumerate() {
                    if !bound[r].is_finite() {
                        continue;
                    }
                    let shift = &half_norms[c0..c0 + cc];
                    let (_, v) = kernels.elementwise.argmax_shifted(row, shift);
                    let floor = (f64::from(best[r].max(v)) - bound[r]) as f32;
                    if v < floor {
                        continue;
                    }
                    if v > best[r] {
                        best[r] = v;
                        near[r].retain(|&(s, _)| s >= floor);
                    }
                    for (j, (&s, &h)) in row.iter().zip(shift).enumerate() {
                        if s - h >= floor {
                            near[r].push((s - h, (c0 + j) as u32));
                        }
                    }
                }
            }
            SCORES.with(|b| *b.borrow_mut() = buf);
            let mut flat = Vec::new();
            for (r, (o, near)) in out.iter_mut().zip(&near).enumerate() {
                let x = &block[r * dim..(r + 1) * dim];
                if !bound[r].is_finite() {
                    flat.push(r);
                    continue;
                }
                // The exact scores of the near ones, as `assign` computes them.
                let mut top = (f32::NEG_INFINITY, 0u32);
                for &(_, c) in near {
                    let cent = &centroids[c as usize * dim..(c as usize + 1) * dim];
                    let v = kernels::packed::dot_chain(x, cent) - half_norms[c as usize];
                    if v > top.0 || (v == top.0 && c < top.1) {
                        top = (v, c);
                    }
                }
                *o = top.1;
            }
            // Vectors with a non-finite value: as `assign` codes them.
            if !flat.is_empty() {
                let rows: Vec<f32> =
                    flat.iter().flat_map(|&r| block[r * dim..(r + 1) * dim].iter().copied()).collect();
                for (&r, c) in flat.iter().zip(assign(&rows, centroids, dim)?) {
                    out[r] = c;
                }
            }
            Ok::<(), EngineError>(())
        })?;
        Ok(codes)
    }
}

/// Like [`assign`], writing into `codes` (cleared first).
fn assign_into(
    vectors: &[f32],
    centroids: &[f32],
    dim: usize,
    precision: Precision,
    kernels: &Kernels,
    codes: &mut Vec<u32>,
) -> Result<()> {
    let k = check_matrix(centroids, dim, "centroids")?;
    if k == 0 {
        return Err(EngineError::InvalidArgument("assign: no centroids".into()));
    }
    if k > u32::MAX as usize {
        return Err(EngineError::InvalidArgument("assign: too many centroids".into()));
    }
    if !vectors.len().is_multiple_of(dim) {
        return Err(EngineError::InvalidArgument(format!(
            "vectors: length {} is not a multiple of dimension {dim}",
            vectors.len()
        )));
    }
    let n = vectors.len() / dim;
    codes.clear();
    codes.resize(n, 0);
    if n == 0 {
        return Ok(());
    }
    let half_norms: Vec<f32> =
        centroids.chunks_exact(dim).map(|c| 0.5 * c.iter().map(|x| x * x).sum::<f32>()).collect();
    // Each task takes `ROWS` vectors and walks the centroids in chunks of `CHUNK`, keeping a
    // running best per vector: the chunk's scores (`ROWS × CHUNK` f32, 1 MiB) stay in the L2
    // cache between the product that writes them and the argmax that reads them, and live in a
    // reused per-thread buffer (fresh allocations of this size cost a page fault per 4 KiB).
    const ROWS: usize = 1024;
    const CHUNK: usize = 256;
    let chunks: Vec<Chunk> =
        centroids.chunks(CHUNK * dim).map(|c| Chunk::pack(c, dim, precision, kernels)).collect();
    vectors.par_chunks(ROWS * dim).zip(codes.par_chunks_mut(ROWS)).for_each(|(block, out_codes)| {
        let m = block.len() / dim;
        SCORES.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < ROWS * CHUNK {
                buf.resize(ROWS * CHUNK, 0.0);
            }
            let mut best = [f32::NEG_INFINITY; ROWS];
            out_codes.fill(0);
            for (chunk, c0) in chunks.iter().zip((0..k).step_by(CHUNK)) {
                let cc = chunk.len;
                let scores = &mut buf[..m * cc];
                chunk.scores(block, m, scores);
                for (r, row) in scores.chunks_exact(cc).enumerate() {
                    let (j, v) = kernels.elementwise.argmax_shifted(row, &half_norms[c0..c0 + cc]);
                    // Strictly greater: on ties the earlier chunk (lower index) keeps it.
                    if v > best[r] {
                        best[r] = v;
                        out_codes[r] = (c0 + j) as u32;
                    }
                }
            }
        })
    });
    Ok(())
}

/// The arithmetic of an assignment's products.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Precision {
    F32,
    /// Inputs rounded to bf16, f32 sums (only where the kernels have a bf16 product).
    Bf16,
}

/// One chunk of centroids, transposed and packed once for the products of an assignment.
struct Chunk {
    /// Centroids in the chunk.
    len: usize,
    packed: Packed,
}

enum Packed {
    F32(PackedMat),
    Bf16(PackedB, Bf16Dense),
}

impl Chunk {
    /// Packs `centroids` (`[len × dim]` row-major) as `[dim × len]`.
    fn pack(centroids: &[f32], dim: usize, precision: Precision, kernels: &Kernels) -> Chunk {
        let len = centroids.len() / dim;
        let f32_pack =
            || Packed::F32(PackedMat::pack_for(Mat::dense(centroids, len, dim).t(), kernels.f32_dense));
        let packed = match (precision, kernels.bf16_dense) {
            (Precision::Bf16, Some(kernel)) => {
                let mut p = PackedB::default();
                p.repack(dim, len, |r, c| centroids[c * dim + r]);
                Packed::Bf16(p, kernel)
            }
            _ => f32_pack(),
        };
        Chunk { len, packed }
    }

    /// `scores = block · chunkᵀ` for `m` vectors: `[m × len]` row-major.
    fn scores(&self, block: &[f32], m: usize, scores: &mut [f32]) {
        match &self.packed {
            Packed::F32(p) => matmul_packed(block, m, p, scores),
            Packed::Bf16(p, kernel) => bf16::matmul(*kernel, block, m, p, scores, false),
        }
    }
}

/// Trains centroids on `sample` (row-major `[n × dim]`).
///
/// `k` is clamped to `n` when the sample has fewer vectors (check [`KMeans::k`]).
///
/// # Errors
/// [`EngineError::InvalidArgument`] for an empty sample, `k == 0` or a shape error;
/// [`EngineError::NonFinite`] if the sample holds NaN or infinity.
pub fn train(sample: &[f32], dim: usize, config: &KMeansConfig) -> Result<KMeans> {
    let n = check_matrix(sample, dim, "k-means sample")?;
    if n == 0 {
        return Err(EngineError::InvalidArgument("k-means: empty sample".into()));
    }
    if config.k == 0 {
        return Err(EngineError::InvalidArgument("k-means: k must be positive".into()));
    }
    let k = config.k.min(n);
    let mut rng = Rng::derive(config.seed, 0x6b6d_6561_6e73);
    let mut centroids = match config.init {
        Init::Random => init_random(sample, dim, k, &mut rng),
        Init::KMeansPlusPlus { pool } => init_plusplus(sample, dim, k, pool.max(k), &mut rng),
    };
    if config.spherical {
        centroids.chunks_exact_mut(dim).for_each(normalize);
    }
    // Lloyd's assignments in bf16 where `Precision::Auto` runs bf16 (see `KMeansConfig::kernels`).
    let lloyd_precision = match config.kernels.runs_bf16(kernels::Precision::Auto) {
        true => Precision::Bf16,
        false => Precision::F32,
    };
    let mut codes = Vec::new();
    let mut prev: Vec<u32> = Vec::new();
    let mut iterations = 0;
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for _ in 0..config.max_iters {
        assign_into(sample, &centroids, dim, lloyd_precision, &config.kernels, &mut codes)?;
        if codes == prev {
            break;
        }
        iterations += 1;
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (x, &c) in sample.chunks_exact(dim).zip(&codes) {
            let c = c as usize;
            counts[c] += 1;
            for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(x) {
                *s += v as f64;
            }
        }
        for (c, cent) in centroids.chunks_exact_mut(dim).enumerate() {
            if counts[c] == 0 {
                // Re-seed an empty cluster on a random sample vector.
                let r = rng.below(n);
                cent.copy_from_slice(&sample[r * dim..(r + 1) * dim]);
            } else {
                let inv = 1.0 / counts[c] as f64;
                for (o, &s) in cent.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *o = (s * inv) as f32;
                }
            }
            if config.spherical {
                normalize(cent);
            }
        }
        std::mem::swap(&mut prev, &mut codes);
    }
    Ok(KMeans { centroids, dim, iterations })
}

/// `k` distinct rows, uniformly (partial Fisher–Yates over row indices).
fn init_random(sample: &[f32], dim: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let n = sample.len() / dim;
    let mut idx: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(k * dim);
    for i in 0..k {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
        let r = idx[i];
        out.extend_from_slice(&sample[r * dim..(r + 1) * dim]);
    }
    out
}

/// k-means++ on a uniform subsample of `pool` rows.
fn init_plusplus(sample: &[f32], dim: usize, k: usize, pool: usize, rng: &mut Rng) -> Vec<f32> {
    let n = sample.len() / dim;
    let pool_data: Vec<f32> = if pool >= n { sample.to_vec() } else { init_random(sample, dim, pool, rng) };
    let p = pool_data.len() / dim;
    let mut out = Vec::with_capacity(k * dim);
    let first = rng.below(p);
    out.extend_from_slice(&pool_data[first * dim..(first + 1) * dim]);
    let sq = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut d2: Vec<f32> = pool_data.par_chunks_exact(dim).map(|x| sq(x, &out[0..dim])).collect();
    for _ in 1..k {
        let total: f64 = d2.iter().map(|&v| v as f64).sum();
        let pick = if total <= 0.0 {
            rng.below(p)
        } else {
            let target = rng.next_f64() * total;
            let mut acc = 0.0;
            let mut pick = p - 1;
            for (i, &v) in d2.iter().enumerate() {
                acc += v as f64;
                if acc > target {
                    pick = i;
                    break;
                }
            }
            pick
        };
        let c = pool_data[pick * dim..(pick + 1) * dim].to_vec();
        d2.par_iter_mut().zip(pool_data.par_chunks_exact(dim)).for_each(|(d, x)| {
            let v = sq(x, &c);
            if v < *d {
                *d = v;
            }
        });
        out.extend_from_slice(&c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthCorpus, SynthSpec, TokensPerDoc};

    fn data(n_docs: usize, dim: usize) -> Vec<f32> {
        SynthCorpus::new(SynthSpec {
            n_docs,
            tokens_per_doc: TokensPerDoc::Fixed(8),
            dim,
            n_clusters: 20,
            noise: 0.3,
            clusters_per_doc: 0,
            seed: 3,
        })
        .unwrap()
        .generate_all()
        .tokens
    }

    fn naive_assign(v: &[f32], c: &[f32], dim: usize) -> Vec<u32> {
        v.chunks_exact(dim)
            .map(|x| {
                let mut best = (f32::INFINITY, 0);
                for (j, m) in c.chunks_exact(dim).enumerate() {
                    let d: f32 = x.iter().zip(m).map(|(a, b)| (a - b) * (a - b)).sum();
                    if d < best.0 {
                        best = (d, j as u32);
                    }
                }
                best.1
            })
            .collect()
    }

    #[test]
    fn default_sizes() {
        assert_eq!(default_num_centroids(320_000), 8192);
        assert_eq!(default_num_centroids(0), 1);
        assert_eq!(default_num_centroids(1), 16);
        assert_eq!(default_sample_docs(10_000), 10_000);
        assert_eq!(default_sample_docs(8_800_000), 519_939);
    }

    #[test]
    fn reproducible_with_seed() {
        let x = data(100, 16);
        for init in [Init::Random, Init::KMeansPlusPlus { pool: 300 }] {
            let cfg = KMeansConfig { init, seed: 11, ..KMeansConfig::new(20) };
            let a = train(&x, 16, &cfg).unwrap();
            let b = train(&x, 16, &cfg).unwrap();
            assert_eq!(a, b);
            let c = train(&x, 16, &KMeansConfig { seed: 12, ..cfg }).unwrap();
            assert_ne!(a.centroids(), c.centroids());
            assert_eq!(a.k(), 20);
            for m in a.centroids().chunks_exact(16) {
                let n: f32 = m.iter().map(|v| v * v).sum();
                assert!((n - 1.0).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn assign_matches_naive() {
        let x = data(50, 16);
        let cents = data(3, 16); // 24 arbitrary centroids
        let mut c2 = cents.clone();
        c2.iter_mut().for_each(|v| *v *= 0.7); // not unit: exercises the norm term
        for c in [&cents, &c2] {
            let fast = assign(&x, c, 16).unwrap();
            let slow = naive_assign(&x, c, 16);
            let mismatch = fast.iter().zip(&slow).filter(|(a, b)| a != b).count();
            assert!(mismatch <= 1, "{mismatch} mismatches"); // float ties only
        }
        assert!(assign(&[], &cents, 16).unwrap().is_empty());
    }

    /// More centroids than one packed chunk (256), the last chunk partial, more vectors than one
    /// task's block (1024), and a width that is not a multiple of the kernel's panels.
    #[test]
    fn assign_matches_naive_across_chunks() {
        let dim = 40;
        let x = data(150, dim); // 1200 vectors
        let cents = data(75, dim); // 600 centroids
        let fast = assign(&x, &cents, dim).unwrap();
        let slow = naive_assign(&x, &cents, dim);
        // Ties between near-identical centroids only: each mismatch within float error.
        for (i, (&a, &b)) in fast.iter().zip(&slow).enumerate() {
            if a != b {
                let d = |j: u32| -> f32 {
                    let (v, c) = (&x[i * dim..][..dim], &cents[j as usize * dim..][..dim]);
                    v.iter().zip(c).map(|(p, q)| (p - q) * (p - q)).sum()
                };
                assert!((d(a) - d(b)).abs() <= 1e-4, "vector {i}: {a} ({}) vs {b} ({})", d(a), d(b));
            }
        }
    }

    /// The rounded-then-checked assignment (8-bit and bf16 products) gives the codes of the f32
    /// one exactly: clustered
    /// vectors (near ties between neighbouring centroids), a duplicated centroid (an exact tie:
    /// the lower index), a vector with a NaN, and more centroids and vectors than one chunk and
    /// block. (Where the CPU has no fast rounded product it is the f32 one.)
    #[test]
    fn checked_assignment_gives_the_f32_codes() {
        let dim = 64;
        let mut cents = data(700, dim); // 5600 centroids
        let dup = cents[11 * dim..12 * dim].to_vec();
        cents[4000 * dim..4001 * dim].copy_from_slice(&dup);
        // 2400 vectors, made close to centroids and halfway between two.
        let mut x = data(300, dim);
        for i in 0..300 {
            let (a, b) = ((i * 13) % 5600, (i * 29 + 1) % 5600);
            for t in 0..dim {
                let (ca, cb) = (cents[a * dim + t], cents[b * dim + t]);
                x[i * dim + t] = if i % 2 == 0 { ca + 1e-3 * x[i * dim + t] } else { 0.5 * (ca + cb) };
            }
        }
        x.extend_from_slice(&dup);
        x[7 * dim + 5] = f32::NAN;
        let want = assign(&x, &cents, dim).unwrap();
        assert_eq!(assign_checked(&x, &cents, dim).unwrap(), want);
        for rounding in [Some(Rounding::Int8), Some(Rounding::Bf16), None] {
            let assigner = CheckedAssigner::with_rounding(&cents, dim, rounding).unwrap();
            assert_eq!(assigner.assign(&x).unwrap(), want, "{:?}", assigner.rounding());
        }
        assert_eq!(*want.last().unwrap(), 11);
        assert!(assign_checked(&x[..dim + 1], &cents, dim).is_err());
    }

    /// Lloyd's bf16 assignments: every vector gets the nearest centroid or one within the bf16
    /// rounding of its scores (inputs rounded to 8 significant bits: about 1e-2 of |x|·|c|).
    #[test]
    fn bf16_assignment_is_nearest_up_to_rounding() {
        if !bf16::available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let dim = 40;
        let (x, cents) = (data(150, dim), data(75, dim));
        let mut fast = Vec::new();
        assign_into(&x, &cents, dim, Precision::Bf16, &Kernels::auto(), &mut fast).unwrap();
        let slow = naive_assign(&x, &cents, dim);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
        let mut differ = 0;
        for (i, (&a, &b)) in fast.iter().zip(&slow).enumerate() {
            let v = &x[i * dim..][..dim];
            let d = |j: u32| -> f32 {
                let c = &cents[j as usize * dim..][..dim];
                v.iter().zip(c).map(|(p, q)| (p - q) * (p - q)).sum()
            };
            if a != b {
                differ += 1;
                let bound = 2e-2 * norm(v) * norm(&cents[a as usize * dim..][..dim]).max(1.0);
                assert!(d(a) - d(b) <= bound, "vector {i}: {a} ({}) vs nearest {b} ({})", d(a), d(b));
            }
        }
        assert!(differ * 20 < x.len() / dim, "{differ} of {} assignments differ", x.len() / dim);
    }

    #[test]
    fn fewer_vectors_than_k_clamps() {
        let x = data(1, 16); // 8 vectors
        let km = train(&x, 16, &KMeansConfig::new(50)).unwrap();
        assert_eq!(km.k(), 8);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut x = data(5, 16);
        assert!(train(&x[..17], 16, &KMeansConfig::new(2)).is_err());
        assert!(train(&[], 16, &KMeansConfig::new(2)).is_err());
        assert!(train(&x, 16, &KMeansConfig::new(0)).is_err());
        x[37] = f32::NAN;
        assert!(matches!(
            train(&x, 16, &KMeansConfig::new(2)),
            Err(EngineError::NonFinite { row: 2, col: 5, .. })
        ));
        x[37] = f32::INFINITY;
        assert!(assign(&data(1, 16), &x, 16).is_err());
    }

    #[test]
    fn lloyd_reduces_distortion() {
        let x = data(200, 16);
        let cost = |c: &[f32]| -> f64 {
            let codes = assign(&x, c, 16).unwrap();
            x.chunks_exact(16)
                .zip(&codes)
                .map(|(v, &j)| {
                    let m = &c[j as usize * 16..(j as usize + 1) * 16];
                    v.iter().zip(m).map(|(a, b)| ((a - b) * (a - b)) as f64).sum::<f64>()
                })
                .sum()
        };
        let c0 = train(&x, 16, &KMeansConfig { max_iters: 0, ..KMeansConfig::new(20) }).unwrap();
        let c1 = train(&x, 16, &KMeansConfig::new(20)).unwrap();
        assert!(cost(c1.centroids()) < cost(c0.centroids()));
    }
}
