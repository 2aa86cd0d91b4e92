//! Choosing the decoding scale of a unit-norm index's residuals.
//!
//! Codebook cells decode to their means, which shrinks residuals (at nbits 1 a decoded residual
//! keeps about 70% of the energy), so decoded tokens crowd towards their centroid.
//! [`Codec::energy_scale`] gives the factor that restores the energy. On ColBERT embeddings of
//! real text, decoding `centroid + scale · r̂` (then renormalising) ranks neighbours much closer
//! to the exact order; on clustered synthetic embeddings with isotropic noise it does not help,
//! and at the document level it costs a little recall. So the builder *measures* it on held-out
//! tokens: each of a few hundred held-out tokens queries a pool of held-out tokens, and the
//! scale is kept only if the top 10 of the decoded pool agree better with the exact top 10 than
//! without it. See docs/PLAID.md, "Energy-matched decoding".

use rayon::prelude::*;

use crate::codec::{dot, normalize, Codec};
use crate::error::Result;

/// Most held-out tokens in the pool searched by the check.
const POOL: usize = 8192;
/// Most held-out tokens used as queries (a subset of the pool).
const QUERIES: usize = 512;
/// Neighbours compared per query.
const TOP: usize = 10;
/// Smallest gain in neighbour recall for which the scale is kept: the check's own noise on
/// 512 queries is a few thousandths.
const MIN_GAIN: f64 = 0.004;

/// What [`choose`] measured and decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DecodeScale {
    /// [`Codec::energy_scale`] on the held-out residuals.
    pub energy: f32,
    /// Top-10 neighbour recall of renormalised decoded tokens against exact ones, unscaled.
    pub recall_unscaled: f64,
    /// The same with the residuals scaled by `energy`.
    pub recall_scaled: f64,
}

impl DecodeScale {
    /// The scale to store: `energy` if it raised neighbour recall by at least [`MIN_GAIN`].
    pub fn chosen(&self) -> f32 {
        if self.recall_scaled >= self.recall_unscaled + MIN_GAIN {
            self.energy
        } else {
            1.0
        }
    }

    /// The measurements as JSON, for the index's build parameters.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "energy_scale": self.energy,
            "neighbour_recall_unscaled": self.recall_unscaled,
            "neighbour_recall_scaled": self.recall_scaled,
            "applied": self.chosen(),
        })
    }
}

/// Measures the energy scale and whether it helps on `tokens` (held-out, row-major), whose
/// centroids are `codes` into `centroids`; `residuals` are theirs (`tokens − centroid`).
///
/// # Errors
/// On shape errors.
pub(crate) fn choose(
    codec: &Codec,
    tokens: &[f32],
    residuals: &[f32],
    codes: &[u32],
    centroids: &[f32],
) -> Result<DecodeScale> {
    let (dim, pl) = (codec.dim(), codec.packed_len());
    let energy = codec.energy_scale(residuals)?;
    let n = tokens.len() / dim;
    let pool: Vec<usize> = (0..n).step_by(n.div_ceil(POOL).max(1)).collect();
    let centroid = |i: usize| &centroids[codes[i] as usize * dim..(codes[i] as usize + 1) * dim];
    // Encoded once, as the builder encodes them; decoded as search decodes them: with a codec
    // rebuilt from the (scaled) weights the index would store, then renormalised.
    let mut packed = vec![0u8; pool.len() * pl];
    for (p, &i) in packed.chunks_exact_mut(pl).zip(&pool) {
        codec.encode_into(&tokens[i * dim..(i + 1) * dim], centroid(i), p)?;
    }
    let decode = |scale: f32| -> Result<Vec<f32>> {
        let stored =
            Codec::from_parts(dim, codec.nbits(), codec.cutoffs().to_vec(), codec.scaled_weights(scale))?;
        let mut out = vec![0f32; pool.len() * dim];
        for ((o, p), &i) in out.chunks_exact_mut(dim).zip(packed.chunks_exact(pl)).zip(&pool) {
            stored.decode_into(p, centroid(i), o)?;
            normalize(o);
        }
        Ok(out)
    };
    let exact: Vec<f32> = pool.iter().flat_map(|&i| tokens[i * dim..(i + 1) * dim].iter().copied()).collect();
    let queries: Vec<&[f32]> = exact.chunks_exact(dim).step_by(pool.len().div_ceil(QUERIES).max(1)).collect();
    let truth = top_neighbours(&queries, &exact, dim);
    let recall = |decoded: &[f32]| -> f64 {
        let got = top_neighbours(&queries, decoded, dim);
        let hits: usize =
            truth.iter().zip(&got).map(|(t, g)| t.iter().filter(|i| g.contains(i)).count()).sum();
        hits as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64
    };
    let recall_unscaled = recall(&decode(1.0)?);
    let recall_scaled = if energy == 1.0 { recall_unscaled } else { recall(&decode(energy)?) };
    Ok(DecodeScale { energy, recall_unscaled, recall_scaled })
}

/// Each query's [`TOP`] highest-dot-product rows of `pool`, by index.
fn top_neighbours(queries: &[&[f32]], pool: &[f32], dim: usize) -> Vec<Vec<usize>> {
    queries
        .par_iter()
        .map(|q| {
            let mut scored: Vec<(f32, usize)> =
                pool.chunks_exact(dim).enumerate().map(|(i, t)| (dot(q, t), i)).collect();
            let k = TOP.min(scored.len());
            if k == 0 {
                return Vec::new();
            }
            scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            scored[..k].iter().map(|&(_, i)| i).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecConfig;

    #[test]
    fn measures_and_reports() {
        // Unit tokens around 4 centroids: the check runs end to end and reports consistently.
        let dim = 16;
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let centroids: Vec<f32> = (0..4 * dim).map(|_| next()).collect();
        let n = 600;
        let mut tokens = Vec::with_capacity(n * dim);
        let mut codes = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % 4;
            let mut t: Vec<f32> =
                centroids[c * dim..(c + 1) * dim].iter().map(|&m| m + 0.3 * next()).collect();
            let norm = t.iter().map(|x| x * x).sum::<f32>().sqrt();
            t.iter_mut().for_each(|x| *x /= norm);
            tokens.extend(t);
            codes.push(c as u32);
        }
        let residuals = crate::codec::residuals(&tokens, &codes, &centroids, dim).unwrap();
        let codec = Codec::train_with(&residuals, dim, &CodecConfig::per_dim(1)).unwrap();
        let d = choose(&codec, &tokens, &residuals, &codes, &centroids).unwrap();
        assert!(d.energy > 1.0, "{d:?}");
        // Decoded tokens stay near their originals: far above chance (10 of 600, 0.017).
        assert!((0.3..=1.0).contains(&d.recall_unscaled) && (0.3..=1.0).contains(&d.recall_scaled), "{d:?}");
        assert!(d.chosen() == 1.0 || d.chosen() == d.energy);
        let forced = DecodeScale { recall_scaled: d.recall_unscaled + 0.01, ..d };
        assert_eq!(forced.chosen(), d.energy);
        let flat = DecodeScale { recall_scaled: d.recall_unscaled + 0.001, ..d };
        assert_eq!(flat.chosen(), 1.0);
        assert_eq!(forced.to_json()["applied"].as_f64().unwrap() as f32, d.energy);
    }
}
