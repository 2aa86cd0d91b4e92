//! Residual compression: `residual = embedding − centroid[code]`, each dimension quantised to
//! `nbits ∈ {1, 2, 4}` and packed into `dim·nbits/8` bytes per token.
//!
//! A scalar quantiser with `B = 2^nbits` buckets maps a value to the bucket between two of the
//! `B − 1` sorted *cutoffs* and decodes it as that bucket's *weight*. Cutoffs and weights are
//! learned from a held-out sample of residuals, either pooled over all dimensions (one set for
//! the index, as Stanford ColBERT does) or per dimension (`dim` sets: `dim·(2B − 1)` floats,
//! a few KiB stored once per index, and the same bytes per token). See [`BucketMethod`] for how
//! they are placed.
//!
//! # Packing
//! Byte `p` of a token holds dimensions `p·g .. p·g + g` with `g = 8 / nbits`; dimension
//! `p·g + j` sits in bits `j·nbits .. (j+1)·nbits` (least significant first).
//!
//! # Decoding
//! Decoding reads one byte at a time through a table of `256 × g` floats per byte position (one
//! shared table when cutoffs are pooled), so each byte costs one lookup and `g` additions. The
//! tables take `dim·nbits/8 × 256 × g × 4 = 32·dim` bytes (16 KiB at dim 128) per-dimension,
//! `1 KiB × g` pooled.

use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::kmeans::check_matrix;
use kernels::decode;
pub use kernels::decode::Norm;
use kernels::ops;

/// Most sample values sorted per quantiser (pooled: all dimensions together; per-dimension: per
/// column). Larger samples are subsampled with a fixed stride.
pub const MAX_VALUES_PER_QUANTISER: usize = 1 << 22;

/// Most sample rows encoded to measure [`Codec::energy_scale`].
pub const MAX_SCALE_SAMPLE: usize = 1 << 16;

/// How bucket cutoffs and weights are learned from the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketMethod {
    /// Cutoffs at the quantiles `i/B`, weights at the quantiles `(i + ½)/B` (Stanford ColBERT).
    Quantile,
    /// Cutoffs at the quantiles `i/B`, weights at the mean of the sample values in each bucket
    /// (the least-squares weights for those cutoffs).
    QuantileMean,
    /// Lloyd–Max: start from `QuantileMean`, then alternate cutoffs at the midpoints of adjacent
    /// weights and weights at bucket means, `iters` times (locally minimises squared error).
    LloydMax {
        /// Refinement rounds.
        iters: usize,
    },
}

/// Codec settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    /// Bits per dimension: 1, 2 or 4.
    pub nbits: u32,
    /// One quantiser per dimension instead of one pooled over all dimensions.
    pub per_dim: bool,
    /// How cutoffs and weights are placed.
    pub method: BucketMethod,
    /// When above 0: after fitting per-dimension buckets, the `g = 8/nbits` dimensions that
    /// share a byte are quantised *jointly*: their `2^nbits`-level grids (exactly 256 points,
    /// one per byte value) seed a 256-entry codebook per byte position, refined by this many
    /// k-means rounds on the sample. Same bytes per token and the same decoding (one table
    /// lookup per byte); lower error than any scalar quantiser because codewords follow the
    /// joint distribution of the group instead of a product grid. Implies `per_dim`.
    pub vq_iters: usize,
}

impl CodecConfig {
    /// `--codec pooled`, the Stanford ColBERT scheme: pooled quantile cutoffs and weights.
    pub fn pooled(nbits: u32) -> Self {
        CodecConfig { nbits, per_dim: false, method: BucketMethod::Quantile, vq_iters: 0 }
    }

    /// `--codec per-dim`: per-dimension Lloyd–Max buckets (scalar: each dimension on its own).
    pub fn per_dim(nbits: u32) -> Self {
        CodecConfig { nbits, per_dim: true, method: BucketMethod::LloydMax { iters: 20 }, vq_iters: 0 }
    }

    /// `--codec joint` (the default): per-dimension Lloyd–Max buckets refined into one joint
    /// codebook per byte (see [`CodecConfig::vq_iters`]).
    pub fn joint(nbits: u32) -> Self {
        CodecConfig { vq_iters: 10, ..CodecConfig::per_dim(nbits) }
    }
}

/// A trained residual quantiser.
#[derive(Debug, Clone, PartialEq)]
pub struct Codec {
    dim: usize,
    nbits: u32,
    per_dim: bool,
    cutoffs: Vec<f32>,
    weights: Vec<f32>,
    lut: Vec<f32>,
    /// Joint codebooks (no cutoffs): per byte position, the `g` coordinates of the 256
    /// codewords stored coordinate-major (`[p][j][code]`), then their halved squared norms
    /// (`[p][code]`), for the nearest-codeword search of `encode_into`.
    vq: Option<VqSearch>,
}

#[derive(Debug, Clone, PartialEq)]
struct VqSearch {
    coords: Vec<f32>,
    half_norms: Vec<f32>,
}

impl VqSearch {
    /// Search tables for `tables` codebooks of 256 codewords of `g` values each (`[p][code][j]`).
    fn new(lut: &[f32], g: usize) -> VqSearch {
        let tables = lut.len() / (256 * g);
        let mut coords = vec![0f32; lut.len()];
        let mut half_norms = vec![0f32; tables * 256];
        for p in 0..tables {
            for code in 0..256 {
                let w = &lut[(p * 256 + code) * g..][..g];
                for (j, &x) in w.iter().enumerate() {
                    coords[(p * g + j) * 256 + code] = x;
                }
                half_norms[p * 256 + code] = 0.5 * w.iter().map(|x| x * x).sum::<f32>();
            }
        }
        VqSearch { coords, half_norms }
    }

    /// The codeword of table `p` nearest to `r` (`g` values): the first maximum of
    /// `r·w − |w|²/2`.
    #[inline]
    fn nearest(&self, p: usize, r: &[f32]) -> u8 {
        let g = r.len();
        let mut score = [0f32; 256];
        ops::combine_rows(r, &self.coords[p * g * 256..(p + 1) * g * 256], &mut score);
        ops::argmax_shifted(&score, &self.half_norms[p * 256..(p + 1) * 256]).0 as u8
    }
}

/// Refines the 256-codeword table `book` (`[code][g]`) on `points` (`[n][g]`) with `iters`
/// Lloyd rounds; a codeword that attracts no point keeps its value.
fn refine_codebook(book: &mut [f32], points: &[f32], g: usize, iters: usize) {
    for _ in 0..iters {
        let search = VqSearch::new(book, g);
        let mut sums = vec![0f64; 256 * g];
        let mut counts = [0usize; 256];
        for x in points.chunks_exact(g) {
            let c = search.nearest(0, x) as usize;
            counts[c] += 1;
            for (s, &v) in sums[c * g..][..g].iter_mut().zip(x) {
                *s += v as f64;
            }
        }
        for c in 0..256 {
            if counts[c] > 0 {
                for j in 0..g {
                    book[c * g + j] = (sums[c * g + j] / counts[c] as f64) as f32;
                }
            }
        }
    }
}

fn check_nbits_dim(nbits: u32, dim: usize) -> Result<()> {
    if !matches!(nbits, 1 | 2 | 4) {
        return Err(EngineError::InvalidArgument(format!("nbits must be 1, 2 or 4, got {nbits}")));
    }
    if dim == 0 || !dim.is_multiple_of(8) {
        return Err(EngineError::InvalidArgument(format!(
            "residual codec needs a dimension that is a positive multiple of 8, got {dim}"
        )));
    }
    Ok(())
}

/// Value at quantile `q` of sorted `v` (linear interpolation).
fn quantile(v: &[f32], q: f64) -> f32 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = (pos - lo as f64) as f32;
    v[lo] + t * (v[hi] - v[lo])
}

/// Cutoffs (`B − 1`) and weights (`B`) for one sorted, non-empty set of values.
fn fit_buckets(sorted: &[f32], b: usize, method: BucketMethod) -> (Vec<f32>, Vec<f32>) {
    let mut cutoffs: Vec<f32> = (1..b).map(|i| quantile(sorted, i as f64 / b as f64)).collect();
    if method == BucketMethod::Quantile {
        let weights = (0..b).map(|i| quantile(sorted, (i as f64 + 0.5) / b as f64)).collect();
        return (cutoffs, weights);
    }
    // Prefix sums make every bucket mean O(log n).
    let mut prefix = Vec::with_capacity(sorted.len() + 1);
    prefix.push(0f64);
    let mut acc = 0f64;
    for &v in sorted {
        acc += v as f64;
        prefix.push(acc);
    }
    let mut weights: Vec<f32> = (0..b).map(|i| quantile(sorted, (i as f64 + 0.5) / b as f64)).collect();
    let means = |cutoffs: &[f32], weights: &mut [f32]| {
        let mut start = 0;
        for (i, w) in weights.iter_mut().enumerate() {
            // Bucket i holds values v with cutoffs[i-1] < v <= cutoffs[i], as `encode` does.
            let end = if i + 1 < b { sorted.partition_point(|&v| v <= cutoffs[i]) } else { sorted.len() };
            if end > start {
                *w = ((prefix[end] - prefix[start]) / (end - start) as f64) as f32;
            }
            start = end.max(start);
        }
    };
    means(&cutoffs, &mut weights);
    if let BucketMethod::LloydMax { iters } = method {
        for _ in 0..iters {
            for (c, w) in cutoffs.iter_mut().zip(weights.windows(2)) {
                *c = 0.5 * (w[0] + w[1]);
            }
            means(&cutoffs, &mut weights);
        }
    }
    (cutoffs, weights)
}

fn sorted_subsample(values: impl Iterator<Item = f32>, len: usize) -> Vec<f32> {
    let stride = len.div_ceil(MAX_VALUES_PER_QUANTISER).max(1);
    let mut v: Vec<f32> = values.step_by(stride).collect();
    v.sort_unstable_by(f32::total_cmp);
    v
}

impl Codec {
    /// Learns cutoffs and weights from `sample_residuals` (row-major `[n × dim]`, `n ≥ 1`):
    /// Stanford-style quantiles when `per_dim` is false, one quantile quantiser per dimension
    /// otherwise. See [`Codec::train_with`] for the other placements.
    ///
    /// # Errors
    /// As [`Codec::train_with`].
    pub fn train(sample_residuals: &[f32], dim: usize, nbits: u32, per_dim: bool) -> Result<Codec> {
        Codec::train_with(
            sample_residuals,
            dim,
            &CodecConfig { nbits, per_dim, method: BucketMethod::Quantile, vq_iters: 0 },
        )
    }

    /// Learns cutoffs and weights from `sample_residuals` (row-major `[n × dim]`, `n ≥ 1`).
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] if `nbits` is not 1, 2 or 4, `dim` is not a positive
    /// multiple of 8, the sample is empty or misshapen; [`EngineError::NonFinite`] if it holds NaN
    /// or infinity.
    pub fn train_with(sample_residuals: &[f32], dim: usize, config: &CodecConfig) -> Result<Codec> {
        check_nbits_dim(config.nbits, dim)?;
        let n = check_matrix(sample_residuals, dim, "codec training sample")?;
        if n == 0 {
            return Err(EngineError::InvalidArgument("codec training sample is empty".into()));
        }
        let b = 1usize << config.nbits;
        if config.vq_iters > 0 {
            let scalar = CodecConfig { per_dim: true, vq_iters: 0, ..*config };
            let mut lut = Codec::train_with(sample_residuals, dim, &scalar)?.lut;
            let g = 8 / config.nbits as usize;
            let stride = n.div_ceil(MAX_VALUES_PER_QUANTISER / g).max(1);
            lut.par_chunks_exact_mut(256 * g).enumerate().for_each(|(p, book)| {
                let points: Vec<f32> = sample_residuals
                    .chunks_exact(dim)
                    .step_by(stride)
                    .flat_map(|row| row[p * g..(p + 1) * g].iter().copied())
                    .collect();
                refine_codebook(book, &points, g, config.vq_iters);
            });
            return Codec::from_parts(dim, config.nbits, Vec::new(), lut);
        }
        let (cutoffs, weights) = if config.per_dim {
            let per: Vec<(Vec<f32>, Vec<f32>)> = (0..dim)
                .into_par_iter()
                .map(|d| {
                    let col = sample_residuals.iter().skip(d).step_by(dim).copied();
                    fit_buckets(&sorted_subsample(col, n), b, config.method)
                })
                .collect();
            let mut c = Vec::with_capacity(dim * (b - 1));
            let mut w = Vec::with_capacity(dim * b);
            for (pc, pw) in per {
                c.extend(pc);
                w.extend(pw);
            }
            (c, w)
        } else {
            let all = sorted_subsample(sample_residuals.iter().copied(), sample_residuals.len());
            fit_buckets(&all, b, config.method)
        };
        Codec::from_parts(dim, config.nbits, cutoffs, weights)
    }

    /// Rebuilds a codec from stored parameters. `cutoffs` has `2^nbits − 1` values (pooled) or
    /// `dim × (2^nbits − 1)` (per dimension, row-major); `weights` has `2^nbits` or
    /// `dim × 2^nbits` values, matching.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] on a bad `nbits`/`dim`, lengths that match neither layout,
    /// or cutoffs not sorted; [`EngineError::NonFinite`] on NaN or infinity.
    pub fn from_parts(dim: usize, nbits: u32, cutoffs: Vec<f32>, weights: Vec<f32>) -> Result<Codec> {
        check_nbits_dim(nbits, dim)?;
        let b = 1usize << nbits;
        let g = 8 / nbits as usize;
        if cutoffs.is_empty() && weights.len() == dim * 256 {
            // Joint codebooks: the weights are the decoding tables themselves.
            check_matrix(&weights, g, "codec codebooks")?;
            let vq = Some(VqSearch::new(&weights, g));
            return Ok(Codec { dim, nbits, per_dim: true, cutoffs, lut: weights, weights: Vec::new(), vq });
        }
        let per_dim = match (cutoffs.len(), weights.len()) {
            (c, w) if c == b - 1 && w == b => false,
            (c, w) if c == dim * (b - 1) && w == dim * b => true,
            (c, w) => {
                return Err(EngineError::InvalidArgument(format!(
                    "codec parameters: {c} cutoffs and {w} weights fit neither the pooled, the \
                     per-dimension nor the joint-codebook layout for dim {dim}, nbits {nbits}"
                )))
            }
        };
        check_matrix(&cutoffs, b - 1, "codec cutoffs")?;
        check_matrix(&weights, b, "codec weights")?;
        if cutoffs.chunks_exact(b - 1).any(|c| c.windows(2).any(|w| w[0] > w[1])) {
            return Err(EngineError::InvalidArgument("codec cutoffs are not sorted".into()));
        }
        let mask = b - 1;
        let tables = if per_dim { dim / g } else { 1 };
        let mut lut = vec![0f32; tables * 256 * g];
        for t in 0..tables {
            for byte in 0..256usize {
                for j in 0..g {
                    let code = (byte >> (j * nbits as usize)) & mask;
                    let wrow = if per_dim { t * g + j } else { 0 };
                    lut[(t * 256 + byte) * g + j] = weights[wrow * b + code];
                }
            }
        }
        Ok(Codec { dim, nbits, per_dim, cutoffs, weights, lut, vq: None })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bits per dimension.
    pub fn nbits(&self) -> u32 {
        self.nbits
    }

    /// Whether each dimension has its own cutoffs and weights (true for joint codebooks too).
    pub fn per_dim(&self) -> bool {
        self.per_dim
    }

    /// Whether the dimensions sharing a byte are quantised jointly (256-codeword tables, no
    /// cutoffs; see [`CodecConfig::vq_iters`]).
    pub fn joint(&self) -> bool {
        self.vq.is_some()
    }

    /// Bucket cutoffs, `[2^nbits − 1]` pooled or `[dim × (2^nbits − 1)]` per dimension; empty
    /// for joint codebooks.
    pub fn cutoffs(&self) -> &[f32] {
        &self.cutoffs
    }

    /// Bucket weights, `[2^nbits]` pooled or `[dim × 2^nbits]` per dimension; for joint
    /// codebooks the `dim/g` tables of 256 codewords of `g = 8/nbits` values (`dim × 256`).
    pub fn weights(&self) -> &[f32] {
        // Joint codebooks are their own decoding tables: kept once, in `lut`.
        if self.vq.is_some() {
            &self.lut
        } else {
            &self.weights
        }
    }

    /// [`Codec::weights`] times `scale`: the decoding weights an index stores when it decodes
    /// residuals scaled (see [`Codec::energy_scale`]). A codec rebuilt from them with
    /// [`Codec::from_parts`] decodes `centroid + scale · r̂`.
    pub fn scaled_weights(&self, scale: f32) -> Vec<f32> {
        self.weights().iter().map(|w| w * scale).collect()
    }

    /// The decoding kernels' view of this codec's table.
    pub fn table(&self) -> decode::Table<'_> {
        decode::Table { lut: &self.lut, dim: self.dim, nbits: self.nbits, per_dim: self.per_dim }
    }

    /// Packed bytes per token: `dim · nbits / 8`.
    pub fn packed_len(&self) -> usize {
        self.dim * self.nbits as usize / 8
    }

    fn check_len(&self, what: &str, got: usize, expected: usize) -> Result<()> {
        if got != expected {
            return Err(EngineError::DimMismatch { what: what.to_string(), expected, got });
        }
        Ok(())
    }

    /// Quantises `emb − centroid` into `out` (`packed_len()` bytes).
    ///
    /// # Errors
    /// [`EngineError::DimMismatch`] if a slice has the wrong length.
    pub fn encode_into(&self, emb: &[f32], centroid: &[f32], out: &mut [u8]) -> Result<()> {
        self.check_len("embedding", emb.len(), self.dim)?;
        self.check_len("centroid", centroid.len(), self.dim)?;
        self.check_len("packed residual", out.len(), self.packed_len())?;
        let nb = self.nbits as usize;
        let g = 8 / nb;
        if let Some(vq) = &self.vq {
            let mut r = [0f32; 8];
            for (p, byte) in out.iter_mut().enumerate() {
                for (j, x) in r[..g].iter_mut().enumerate() {
                    *x = emb[p * g + j] - centroid[p * g + j];
                }
                *byte = vq.nearest(p, &r[..g]);
            }
            return Ok(());
        }
        let nc = (1usize << nb) - 1;
        for (p, byte) in out.iter_mut().enumerate() {
            let mut acc = 0u8;
            for j in 0..g {
                let d = p * g + j;
                let v = emb[d] - centroid[d];
                let cut = if self.per_dim { &self.cutoffs[d * nc..(d + 1) * nc] } else { &self.cutoffs[..] };
                let code = cut.iter().filter(|&&c| c < v).count() as u8;
                acc |= code << (j * nb);
            }
            *byte = acc;
        }
        Ok(())
    }

    /// Quantises `emb − centroid` into a new `packed_len()`-byte vector.
    ///
    /// # Errors
    /// As [`Codec::encode_into`].
    pub fn encode(&self, emb: &[f32], centroid: &[f32]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.packed_len()];
        self.encode_into(emb, centroid, &mut out)?;
        Ok(out)
    }

    /// Decodes one token: `out = centroid + weights[codes]`. Does not renormalise.
    ///
    /// # Errors
    /// [`EngineError::DimMismatch`] if a slice has the wrong length.
    pub fn decode_into(&self, packed: &[u8], centroid: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_len("packed residual", packed.len(), self.packed_len())?;
        self.check_len("centroid", centroid.len(), self.dim)?;
        self.check_len("output", out.len(), self.dim)?;
        decode::decode_one(&self.table(), packed, centroid, out);
        Ok(())
    }

    /// Decodes `codes.len()` tokens at once: token `i` from `packed[i * packed_len()..]` against
    /// row `codes[i]` of `centroids` (`[n, dim]` row-major) into row `i` of `out`, then applies
    /// `norm` (renormalised to unit length, or multiplied by the token's stored factor). The same
    /// arithmetic as [`Codec::decode_into`] then [`normalize`] (or the multiplication) per token,
    /// bit for bit, compiled for AVX-512 where the CPU has it: the decoding loop of search's
    /// final stage.
    ///
    /// # Errors
    /// [`EngineError::DimMismatch`] if a slice has the wrong length (`norm`'s factors included),
    /// [`EngineError::InvalidArgument`] for a code outside `centroids`.
    pub fn decode_rows(
        &self,
        packed: &[u8],
        codes: &[u32],
        centroids: &[f32],
        norm: Norm<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        let (n, d) = (codes.len(), self.dim);
        self.check_len("packed residuals", packed.len(), n * self.packed_len())?;
        self.check_len("output", out.len(), n * d)?;
        if let Norm::Scale(f) = norm {
            self.check_len("norm factors", f.len(), n)?;
        }
        if codes.iter().any(|&c| (c as usize + 1) * d > centroids.len()) {
            return Err(EngineError::InvalidArgument("decode_rows: code outside the centroids".into()));
        }
        decode::decode_rows(&self.table(), packed, codes, centroids, norm, out);
        Ok(())
    }

    /// Encodes many tokens in parallel: row `i` of `embs` against centroid `codes[i]`, appending
    /// `packed_len()` bytes per token to `out`.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] on shape errors or a code out of range.
    pub fn encode_batch(
        &self,
        embs: &[f32],
        codes: &[u32],
        centroids: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let d = self.dim;
        if embs.len() != codes.len() * d || !centroids.len().is_multiple_of(d) {
            return Err(EngineError::InvalidArgument("encode_batch: shapes disagree".into()));
        }
        let k = centroids.len() / d;
        if codes.iter().any(|&c| c as usize >= k) {
            return Err(EngineError::InvalidArgument("encode_batch: code out of range".into()));
        }
        let pl = self.packed_len();
        let start = out.len();
        out.resize(start + codes.len() * pl, 0);
        out[start..]
            .par_chunks_exact_mut(pl)
            .zip(embs.par_chunks_exact(d))
            .zip(codes.par_iter())
            .try_for_each(|((o, e), &c)| {
                self.encode_into(e, &centroids[c as usize * d..(c as usize + 1) * d], o)
            })
    }

    /// The scale that gives decoded residuals the energy of the residuals they stand for:
    /// `sqrt(Σ‖r‖² / Σ‖r̂‖²)` over (a subsample of at most [`MAX_SCALE_SAMPLE`] rows of)
    /// `sample_residuals`, where `r̂` is `r` encoded and decoded.
    ///
    /// Decoding to the mean of a bucket or codebook cell minimises squared error but shrinks the
    /// residual: at nbits 1 a decoded residual keeps about 70% of the energy, so decoded tokens
    /// crowd towards their centroid. For unit-norm tokens, which search renormalises after
    /// decoding, decoding `centroid + scale · r̂` restores that spread and ranks neighbours closer
    /// to the exact order (docs/PLAID.md, "Energy-matched decoding"). Returns 1 when the decoded
    /// sample has no energy.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] if the sample is empty or not a whole number of tokens.
    pub fn energy_scale(&self, sample_residuals: &[f32]) -> Result<f32> {
        let n = check_matrix(sample_residuals, self.dim, "codec scale sample")?;
        if n == 0 {
            return Err(EngineError::InvalidArgument("codec scale sample is empty".into()));
        }
        let stride = n.div_ceil(MAX_SCALE_SAMPLE).max(1);
        let zero = vec![0f32; self.dim];
        let (true_energy, decoded_energy) = sample_residuals
            .par_chunks_exact(self.dim)
            .step_by(stride)
            .map_init(
                || (vec![0u8; self.packed_len()], vec![0f32; self.dim]),
                |(packed, decoded), r| {
                    self.encode_into(r, &zero, packed).expect("shapes checked");
                    self.decode_into(packed, &zero, decoded).expect("shapes checked");
                    let sq = |v: &[f32]| v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                    (sq(r), sq(decoded))
                },
            )
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        if decoded_energy <= 0.0 || !decoded_energy.is_finite() || !true_energy.is_finite() {
            return Ok(1.0);
        }
        Ok((true_energy / decoded_energy).sqrt() as f32)
    }
}

pub(crate) use kernels::decode::{dot, normalize};

/// Residuals `embs[i] − centroids[codes[i]]`, row-major, for training a [`Codec`].
///
/// # Errors
/// [`EngineError::InvalidArgument`] on shape errors or a code out of range.
pub fn residuals(embs: &[f32], codes: &[u32], centroids: &[f32], dim: usize) -> Result<Vec<f32>> {
    if dim == 0 || embs.len() != codes.len() * dim || !centroids.len().is_multiple_of(dim) {
        return Err(EngineError::InvalidArgument("residuals: shapes disagree".into()));
    }
    let k = centroids.len() / dim;
    if codes.iter().any(|&c| c as usize >= k) {
        return Err(EngineError::InvalidArgument("residuals: code out of range".into()));
    }
    let mut out = vec![0f32; embs.len()];
    out.par_chunks_exact_mut(dim).zip(embs.par_chunks_exact(dim)).zip(codes.par_iter()).for_each(
        |((o, e), &c)| {
            let cent = &centroids[c as usize * dim..(c as usize + 1) * dim];
            for ((o, &e), &m) in o.iter_mut().zip(e).zip(cent) {
                *o = e - m;
            }
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use proptest::prelude::*;

    fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        // Different scale per dimension, as real residuals have.
        (0..n * dim).map(|i| r.normal() * (0.02 + 0.01 * (i % dim) as f32 / dim as f32)).collect()
    }

    /// Every method, pooled and per-dimension.
    fn configs(nbits: u32) -> Vec<CodecConfig> {
        let mut v = Vec::new();
        for per_dim in [false, true] {
            for method in
                [BucketMethod::Quantile, BucketMethod::QuantileMean, BucketMethod::LloydMax { iters: 5 }]
            {
                v.push(CodecConfig { nbits, per_dim, method, vq_iters: 0 });
            }
        }
        v
    }

    #[test]
    fn pack_unpack_round_trip() {
        // With weights equal to the bucket index and cutoffs between them, decoding against a
        // zero centroid returns exactly the code of every dimension.
        let dim = 24;
        for nbits in [1u32, 2, 4] {
            let b = 1usize << nbits;
            for per_dim in [false, true] {
                let reps = if per_dim { dim } else { 1 };
                let cut: Vec<f32> = (0..reps).flat_map(|_| (1..b).map(|i| i as f32 - 0.5)).collect();
                let w: Vec<f32> = (0..reps).flat_map(|_| (0..b).map(|i| i as f32)).collect();
                let codec = Codec::from_parts(dim, nbits, cut, w).unwrap();
                assert_eq!(codec.per_dim(), per_dim);
                assert_eq!(codec.packed_len(), dim * nbits as usize / 8);
                let mut r = Rng::new(nbits as u64);
                for _ in 0..50 {
                    let codes: Vec<f32> = (0..dim).map(|_| r.below(b) as f32).collect();
                    let zero = vec![0f32; dim];
                    let packed = codec.encode(&codes, &zero).unwrap();
                    // The documented bit layout.
                    let g = 8 / nbits as usize;
                    for (d, &c) in codes.iter().enumerate() {
                        let got = (packed[d / g] >> ((d % g) * nbits as usize)) & (b as u8 - 1);
                        assert_eq!(got as f32, c);
                    }
                    let mut out = vec![0f32; dim];
                    codec.decode_into(&packed, &zero, &mut out).unwrap();
                    assert_eq!(out, codes);
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = gaussian(10, 12, 1);
        assert!(Codec::train(&s, 12, 2, false).is_err()); // 12 is not a multiple of 8
        let s = gaussian(10, 16, 1);
        assert!(Codec::train(&s, 16, 3, false).is_err());
        assert!(Codec::train(&[], 16, 2, false).is_err());
        let mut bad = s.clone();
        bad[20] = f32::NAN;
        assert!(matches!(
            Codec::train(&bad, 16, 2, true),
            Err(EngineError::NonFinite { row: 1, col: 4, .. })
        ));
        bad[20] = f32::NEG_INFINITY;
        assert!(Codec::train(&bad, 16, 2, false).is_err());
        let c = Codec::train(&s, 16, 2, false).unwrap();
        assert!(c.encode(&s[..15], &s[..16]).is_err());
        assert!(c.decode_into(&[0u8; 3], &s[..16], &mut [0f32; 16]).is_err());
        assert!(Codec::from_parts(16, 2, vec![0.0; 2], vec![0.0; 4]).is_err());
        assert!(Codec::from_parts(16, 2, vec![1.0, 0.0, 2.0], vec![0.0; 4]).is_err());
    }

    #[test]
    fn batch_decoding_matches_token_by_token() {
        // dim 64: the AVX-512 path where the CPU has it; dim 40 (an 8-float tail past two 16-lane
        // blocks): the portable one.
        for dim in [64usize, 40] {
            let s = gaussian(400, dim, 5);
            let centroids = gaussian(3, dim, 6);
            let codes: Vec<u32> = (0..25).map(|i| (i * 7 % 3) as u32).collect();
            for nbits in [1u32, 2, 4] {
                for cfg in configs(nbits).into_iter().chain([CodecConfig::joint(nbits)]) {
                    let c = Codec::train_with(&s, dim, &cfg).unwrap();
                    let mut packed = Vec::new();
                    c.encode_batch(&s[..codes.len() * dim], &codes, &centroids, &mut packed).unwrap();
                    let factors: Vec<half::f16> =
                        (0..codes.len()).map(|i| half::f16::from_f32(0.9 + 0.01 * i as f32)).collect();
                    for norm in [Norm::Keep, Norm::Unit, Norm::Scale(&factors)] {
                        let mut got = vec![f32::NAN; codes.len() * dim];
                        c.decode_rows(&packed, &codes, &centroids, norm, &mut got).unwrap();
                        let pl = c.packed_len();
                        for (i, &code) in codes.iter().enumerate() {
                            let mut want = vec![0f32; dim];
                            let centroid = &centroids[code as usize * dim..][..dim];
                            c.decode_into(&packed[i * pl..][..pl], centroid, &mut want).unwrap();
                            match norm {
                                Norm::Keep => {}
                                Norm::Unit => normalize(&mut want),
                                Norm::Scale(f) => want.iter_mut().for_each(|x| *x *= f[i].to_f32()),
                            }
                            assert_eq!(&got[i * dim..][..dim], &want[..], "nbits {nbits} {cfg:?} token {i}");
                        }
                    }
                    let mut out = vec![0f32; codes.len() * dim];
                    let two = &packed[..2 * c.packed_len()];
                    let unit = Norm::Unit;
                    assert!(c.decode_rows(two, &[0, 3], &centroids, unit, &mut out[..2 * dim]).is_err());
                    assert!(c.decode_rows(two, &[0, 2], &centroids, unit, &mut out[..2 * dim]).is_ok());
                    assert!(c.decode_rows(&packed[1..], &codes, &centroids, unit, &mut out).is_err());
                    let one = Norm::Scale(&factors[..1]);
                    assert!(c.decode_rows(two, &[0, 2], &centroids, one, &mut out[..2 * dim]).is_err());
                }
            }
        }
    }

    #[test]
    fn parts_round_trip() {
        let s = gaussian(300, 16, 2);
        for cfg in configs(2) {
            let c = Codec::train_with(&s, 16, &cfg).unwrap();
            let back = Codec::from_parts(16, 2, c.cutoffs().to_vec(), c.weights().to_vec()).unwrap();
            assert_eq!(c, back);
        }
    }

    #[test]
    fn better_methods_lower_the_error() {
        let s = gaussian(2000, 32, 3);
        let test = gaussian(2000, 32, 4);
        let zero = vec![0f32; 32];
        for nbits in [1u32, 2, 4] {
            let mse = |cfg: CodecConfig| -> f64 {
                let c = Codec::train_with(&s, 32, &cfg).unwrap();
                let mut out = vec![0f32; 32];
                let mut e = 0f64;
                for x in test.chunks_exact(32) {
                    c.decode_into(&c.encode(x, &zero).unwrap(), &zero, &mut out).unwrap();
                    e += x.iter().zip(&out).map(|(a, b)| ((a - b) * (a - b)) as f64).sum::<f64>();
                }
                e
            };
            let stanford = mse(CodecConfig::pooled(nbits));
            let improved = mse(CodecConfig::per_dim(nbits));
            assert!(improved < stanford, "nbits {nbits}: {improved} vs {stanford}");
        }
    }

    #[test]
    fn energy_scale_restores_the_residual_energy() {
        let dim = 16;
        let sample = gaussian(20_000, dim, 11);
        // A 1-bit Lloyd–Max quantiser of a Gaussian decodes to ±σ·sqrt(2/π): it keeps 2/π of
        // the energy, so the scale is sqrt(π/2).
        let one_bit = Codec::train_with(&sample, dim, &CodecConfig::per_dim(1)).unwrap();
        let s = one_bit.energy_scale(&sample).unwrap();
        assert!((s - std::f32::consts::FRAC_PI_2.sqrt()).abs() < 0.02, "nbits 1 scale {s}");
        // Scaling the decoding weights (encoding is by cutoffs, so unchanged) leaves nothing to
        // restore.
        let scaled =
            Codec::from_parts(dim, 1, one_bit.cutoffs().to_vec(), one_bit.scaled_weights(s)).unwrap();
        let again = scaled.energy_scale(&sample).unwrap();
        assert!((again - 1.0).abs() < 1e-3, "rescaled codec's scale {again}");
        // More bits keep more energy: the scale falls towards 1, for joint codebooks too.
        let scales: Vec<f32> = [1u32, 2, 4]
            .iter()
            .map(|&nbits| {
                let c = Codec::train_with(&sample, dim, &CodecConfig::joint(nbits)).unwrap();
                c.energy_scale(&sample).unwrap()
            })
            .collect();
        assert!(scales[0] > scales[1] && scales[1] > scales[2] && scales[2] > 1.0, "{scales:?}");
        assert!(scales[2] < 1.05, "{scales:?}");
        assert!(one_bit.energy_scale(&[]).is_err());
        assert!(one_bit.energy_scale(&sample[..dim + 1]).is_err());
    }

    /// Squared decoding error of `c` over `test` against a zero centroid.
    fn sq_error(c: &Codec, test: &[f32]) -> f64 {
        let dim = c.dim();
        let zero = vec![0f32; dim];
        let mut out = vec![0f32; dim];
        let mut e = 0f64;
        for x in test.chunks_exact(dim) {
            c.decode_into(&c.encode(x, &zero).unwrap(), &zero, &mut out).unwrap();
            e += x.iter().zip(&out).map(|(a, b)| ((a - b) * (a - b)) as f64).sum::<f64>();
        }
        e
    }

    #[test]
    fn joint_codebooks_lower_the_error_on_unseen_data() {
        let dim = 16;
        // Correlated pairs of dimensions, as real residuals have.
        let correlated = |n: usize, seed: u64| -> Vec<f32> {
            let mut r = Rng::new(seed);
            let mut v = gaussian(n, dim, seed ^ 7);
            for row in v.chunks_exact_mut(2) {
                let shared = r.normal() * 0.02;
                row[0] += shared;
                row[1] -= shared;
            }
            v
        };
        let (train, test) = (correlated(8000, 5), correlated(4000, 6));
        for nbits in [1u32, 2, 4] {
            let scalar = Codec::train_with(&train, dim, &CodecConfig::per_dim(nbits)).unwrap();
            let joint = Codec::train_with(&train, dim, &CodecConfig::joint(nbits)).unwrap();
            assert!(joint.joint() && !scalar.joint());
            assert_eq!(joint.packed_len(), scalar.packed_len());
            let (es, ej) = (sq_error(&scalar, &test), sq_error(&joint, &test));
            assert!(ej < 0.97 * es, "nbits {nbits}: joint {ej} vs scalar {es}");
        }
    }

    #[test]
    fn joint_codebooks_round_trip_and_encode_to_the_nearest_codeword() {
        let dim = 16;
        let train = gaussian(3000, dim, 9);
        for nbits in [1u32, 2, 4] {
            let c = Codec::train_with(&train, dim, &CodecConfig::joint(nbits)).unwrap();
            assert!(c.cutoffs().is_empty());
            let back = Codec::from_parts(dim, nbits, Vec::new(), c.weights().to_vec()).unwrap();
            assert_eq!(c, back);
            let g = 8 / nbits as usize;
            let zero = vec![0f32; dim];
            for x in gaussian(50, dim, 10).chunks_exact(dim) {
                let packed = c.encode(x, &zero).unwrap();
                for (p, &byte) in packed.iter().enumerate() {
                    let dist = |code: usize| -> f32 {
                        let w = &c.weights()[(p * 256 + code) * g..][..g];
                        w.iter().zip(&x[p * g..]).map(|(a, b)| (a - b) * (a - b)).sum()
                    };
                    let best = (0..256).map(dist).fold(f32::INFINITY, f32::min);
                    assert!(dist(byte as usize) <= best * (1.0 + 1e-5) + 1e-12, "byte {p}");
                }
            }
        }
        // Codebooks with a NaN are refused.
        let mut bad = Codec::train_with(&train, dim, &CodecConfig::joint(2)).unwrap().weights().to_vec();
        bad[3] = f32::NAN;
        assert!(Codec::from_parts(dim, 2, Vec::new(), bad).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Every decoded value lies within its bucket's extent of the input (the quantisation
        /// bound), for inputs inside the training range.
        #[test]
        fn error_within_quantisation_bound(seed in any::<u64>(), nbits in prop::sample::select(vec![1u32, 2, 4]),
                                           which in 0usize..6) {
            let dim = 16;
            let train = gaussian(400, dim, seed);
            let cfg = configs(nbits)[which];
            let c = Codec::train_with(&train, dim, &cfg).unwrap();
            let b = 1usize << nbits;
            let mut r = Rng::new(seed ^ 1);
            let centroid: Vec<f32> = (0..dim).map(|_| r.normal() * 0.1).collect();
            for row in train.chunks_exact(dim).take(100) {
                let emb: Vec<f32> = row.iter().zip(&centroid).map(|(x, m)| x + m).collect();
                let mut out = vec![0f32; dim];
                c.decode_into(&c.encode(&emb, &centroid).unwrap(), &centroid, &mut out).unwrap();
                for d in 0..dim {
                    let q = if cfg.per_dim { d } else { 0 };
                    let cut = &c.cutoffs()[q * (b - 1)..(q + 1) * (b - 1)];
                    let w = &c.weights()[q * b..(q + 1) * b];
                    let col: Vec<f32> = if cfg.per_dim {
                        train.iter().skip(d).step_by(dim).copied().collect()
                    } else { train.clone() };
                    let lo = col.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = col.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let bound = (0..b).map(|i| {
                        let l = if i == 0 { lo } else { cut[i - 1] };
                        let h = if i + 1 == b { hi } else { cut[i] };
                        (w[i] - l).abs().max((h - w[i]).abs())
                    }).fold(0f32, f32::max);
                    let err = (out[d] - emb[d]).abs();
                    prop_assert!(err <= bound + 1e-5, "dim {d}: error {err} > bound {bound}");
                }
            }
        }
    }
}
