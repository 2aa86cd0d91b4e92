//! The k-means training sample, bounded in memory.
//!
//! The documents picked by [`super::sample_docs`] hold about `16·sqrt(120·docs)` documents' tokens,
//! which for a collection of tens of thousands of documents is every token of it: held as f32,
//! 2.36M MiniLM tokens took 3.6 GB. [`TrainingSample`] keeps a uniform random subset of at most a
//! fixed number of tokens instead (reservoir sampling, seeded, so a build is reproducible), so the
//! build's memory stops growing with the collection once the sample fills.

use crate::rng::Rng;

/// Default memory of a training sample: 512 MiB of f32 values (about 349k tokens of 384
/// dimensions, 1M tokens of 128).
pub const DEFAULT_TRAIN_MEMORY: usize = 512 << 20;

/// A uniform random sample of at most `capacity` token embeddings out of all those offered.
#[derive(Debug, Clone)]
pub struct TrainingSample {
    dim: usize,
    capacity: usize,
    rows: Vec<f32>,
    seen: u64,
    rng: Rng,
}

impl TrainingSample {
    /// An empty sample of at most `capacity` (at least 1) tokens of `dim` values.
    ///
    /// # Panics
    /// If `dim` is 0.
    pub fn new(dim: usize, capacity: usize, seed: u64) -> Self {
        assert!(dim > 0, "training sample of 0-dimensional tokens");
        TrainingSample {
            dim,
            capacity: capacity.max(1),
            rows: Vec::new(),
            seen: 0,
            rng: Rng::derive(seed, 0x7265_7365_7276),
        }
    }

    /// An empty sample whose f32 values take at most `bytes` (at least one token).
    pub fn with_memory(dim: usize, bytes: usize, seed: u64) -> Self {
        Self::new(dim, bytes / (4 * dim.max(1)), seed)
    }

    /// Offers a document's tokens (row-major, a whole number of `dim`-wide rows): while the
    /// sample has room every token is kept, then token number `i` (counting from 0 over all
    /// tokens offered) replaces a random kept one with probability `capacity / (i + 1)`, which
    /// keeps every token offered equally likely to be in the sample.
    ///
    /// # Panics
    /// If `tokens` is not a whole number of rows.
    pub fn add(&mut self, tokens: &[f32]) {
        let dim = self.dim;
        assert!(tokens.len().is_multiple_of(dim), "{} values are not whole {dim}-d tokens", tokens.len());
        for row in tokens.chunks_exact(dim) {
            if self.rows.len() / dim < self.capacity {
                self.rows.extend_from_slice(row);
            } else {
                let j = self.rng.below(self.seen as usize + 1);
                if j < self.capacity {
                    self.rows[j * dim..(j + 1) * dim].copy_from_slice(row);
                }
            }
            self.seen += 1;
        }
    }

    /// Tokens offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    /// Whether no token was kept.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether some tokens offered were left out.
    pub fn is_subsampled(&self) -> bool {
        self.seen > self.len() as u64
    }

    /// The kept tokens, row-major.
    pub fn into_rows(self) -> Vec<f32> {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_capacity() {
        let mut s = TrainingSample::new(2, 10, 1);
        s.add(&[1.0, 2.0, 3.0, 4.0]);
        s.add(&[5.0, 6.0]);
        assert_eq!((s.len(), s.seen(), s.is_subsampled()), (3, 3, false));
        assert_eq!(s.into_rows(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // An unbounded capacity does not overflow.
        let mut s = TrainingSample::new(384, usize::MAX, 0);
        s.add(&[0.25; 384 * 3]);
        assert_eq!((s.len(), s.is_subsampled()), (3, false));
    }

    #[test]
    fn memory_bound_sets_capacity() {
        let mut s = TrainingSample::with_memory(4, 4 * 4 * 5, 0);
        s.add(&[0.5; 4 * 12]);
        assert_eq!((s.len(), s.seen()), (5, 12));
        assert!(s.is_subsampled());
    }

    /// Each of 1000 tokens lands in a 100-token sample about 10% of the time, the early ones as
    /// often as the late ones; and the same seed gives the same sample.
    #[test]
    fn sample_is_uniform_and_seeded() {
        let (n, cap, runs) = (1000usize, 100usize, 400u64);
        let mut hits = vec![0u32; n];
        for seed in 0..runs {
            let mut s = TrainingSample::new(1, cap, seed);
            for i in 0..n {
                s.add(&[i as f32]);
            }
            for v in s.into_rows() {
                hits[v as usize] += 1;
            }
        }
        let expected = runs as f64 * cap as f64 / n as f64; // 40 per token
        for (part, chunk) in hits.chunks(100).enumerate() {
            let mean = chunk.iter().map(|&h| h as f64).sum::<f64>() / chunk.len() as f64;
            assert!(
                (mean - expected).abs() < 0.15 * expected,
                "tokens {}..: mean {mean} vs {expected}",
                part * 100
            );
        }
        let draw = |seed| {
            let mut s = TrainingSample::new(1, 10, seed);
            (0..100).for_each(|i| s.add(&[i as f32]));
            s.into_rows()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
