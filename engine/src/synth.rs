//! Seeded synthetic token embeddings for tests and benchmarks.
//!
//! Real ColBERT token embeddings are unit vectors that gather in many tight clusters (one per
//! sense of a word piece, roughly), with many tokens per cluster. [`SynthCorpus`] imitates that:
//! it draws `n_clusters` random unit centres, and each document token is a centre plus Gaussian
//! noise of expected norm `noise`, renormalised. With `n_clusters == 0` it draws i.i.d. random
//! unit vectors instead (no structure at all: the hard case for centroid-based search).
//!
//! Every document is generated from its own seed, derived from the corpus seed and its index, so
//! a document is the same whether the corpus is produced in one piece, by chunks of any size
//! ([`SynthCorpus::chunks`]), or alone ([`SynthCorpus::doc_into`]). This lets a caller stream
//! tens of millions of tokens without holding them.
//!
//! Queries ([`SynthCorpus::queries`]) are perturbed copies of a random document's tokens, so each
//! has true near neighbours in the corpus.

use half::f16;

use crate::error::{EngineError, Result};

pub(crate) use crate::rng::Rng;

/// The largest dimension [`SynthCorpus::new`] accepts.
pub const MAX_SYNTH_DIM: usize = 1 << 16;

/// The most tokens per document [`SynthCorpus::new`] accepts (documents are generated whole, so
/// one must fit in memory: at the largest dimension, 16 GiB of f32).
pub const MAX_SYNTH_TOKENS_PER_DOC: usize = 1 << 16;

/// How many tokens each document has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokensPerDoc {
    /// Every document has this many tokens.
    Fixed(usize),
    /// Uniform in `min..=max`.
    Range {
        /// Fewest tokens in a document.
        min: usize,
        /// Most tokens in a document.
        max: usize,
    },
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Number of documents.
    pub n_docs: usize,
    /// Tokens per document.
    pub tokens_per_doc: TokensPerDoc,
    /// Embedding dimension.
    pub dim: usize,
    /// Number of cluster centres; 0 gives i.i.d. random unit vectors.
    pub n_clusters: usize,
    /// Expected norm of the Gaussian noise added to a cluster centre before renormalising
    /// (0.3 gives a typical cosine of about 0.95 between a token and its centre).
    pub noise: f32,
    /// Number of distinct clusters a document draws its tokens from (documents are about a few
    /// topics); 0 means any cluster, independently per token.
    pub clusters_per_doc: usize,
    /// Seed for everything.
    pub seed: u64,
}

impl SynthSpec {
    /// The clustered 10k benchmark set: 10,000 docs × 32 tokens × 128-d, 2,000 clusters, noise
    /// 0.35, each document drawing from 8 clusters, seed 42 (`plaid_eval` and the `peers` bench
    /// use it; `colbert-index synth`'s defaults write the same documents).
    pub fn clustered_10k() -> Self {
        SynthSpec {
            n_docs: 10_000,
            tokens_per_doc: TokensPerDoc::Fixed(32),
            dim: 128,
            n_clusters: 2_000,
            noise: 0.35,
            clusters_per_doc: 8,
            seed: 42,
        }
    }
}

/// A contiguous run of generated documents.
#[derive(Debug, Clone, Default)]
pub struct DocChunk {
    /// Index of the first document in the chunk.
    pub first_doc: usize,
    /// Token count of each document in the chunk.
    pub doclens: Vec<u32>,
    /// Row-major `[Σ doclens × dim]` L2-normalised tokens.
    pub tokens: Vec<f32>,
}

impl DocChunk {
    /// The tokens converted to f16.
    pub fn tokens_f16(&self) -> Vec<f16> {
        self.tokens.iter().map(|&x| f16::from_f32(x)).collect()
    }
}

/// A generator bound to a [`SynthSpec`]; holds only the cluster centres.
#[derive(Debug, Clone)]
pub struct SynthCorpus {
    spec: SynthSpec,
    centres: Vec<f32>,
}

const STREAM_CENTRES: u64 = 1 << 62;
const STREAM_QUERIES: u64 = (1 << 62) + 1;

/// Scales `v` to unit length (leaves an all-zero vector alone).
pub(crate) fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

fn random_unit(rng: &mut Rng, out: &mut [f32]) {
    out.iter_mut().for_each(|x| *x = rng.normal());
    normalize(out);
}

impl SynthCorpus {
    /// Validates `spec` and draws the cluster centres.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] if `dim` is zero or above [`MAX_SYNTH_DIM`], a document
    /// could have zero tokens or more than [`MAX_SYNTH_TOKENS_PER_DOC`], the token range is
    /// empty, `noise` is negative or not finite, the corpus's size in bytes overflows 64 bits,
    /// or the cluster centres cannot be allocated.
    pub fn new(spec: SynthSpec) -> Result<Self> {
        let bad = |m: String| Err(EngineError::InvalidArgument(format!("synthetic spec: {m}")));
        if spec.dim == 0 || spec.dim > MAX_SYNTH_DIM {
            return bad(format!("dim {} must be between 1 and {MAX_SYNTH_DIM}", spec.dim));
        }
        let max_len = match spec.tokens_per_doc {
            TokensPerDoc::Fixed(0) => return bad("tokens_per_doc must be positive".into()),
            TokensPerDoc::Range { min, max } if min == 0 || min > max => {
                return bad("tokens_per_doc range must satisfy 0 < min <= max".into())
            }
            TokensPerDoc::Fixed(n) | TokensPerDoc::Range { max: n, .. } => n,
        };
        if max_len > MAX_SYNTH_TOKENS_PER_DOC {
            return bad(format!(
                "{max_len} tokens per document, above the limit of {MAX_SYNTH_TOKENS_PER_DOC}"
            ));
        }
        let bytes = (spec.n_docs as u64)
            .checked_mul(max_len as u64)
            .and_then(|t| t.checked_mul(spec.dim as u64))
            .and_then(|v| v.checked_mul(2));
        if bytes.is_none() {
            return bad(format!(
                "{} documents of up to {max_len} tokens of dimension {} overflow 64 bits of f16 bytes",
                spec.n_docs, spec.dim
            ));
        }
        if !spec.noise.is_finite() || spec.noise < 0.0 {
            return bad("noise must be finite and non-negative".into());
        }
        let mut rng = Rng::derive(spec.seed, STREAM_CENTRES);
        let n_values = spec.n_clusters.checked_mul(spec.dim).filter(|&n| n <= isize::MAX as usize / 4);
        let mut centres: Vec<f32> = Vec::new();
        if n_values.is_none_or(|n| centres.try_reserve_exact(n).is_err()) {
            return bad(format!(
                "{} cluster centres of dimension {} do not fit in memory",
                spec.n_clusters, spec.dim
            ));
        }
        centres.resize(n_values.unwrap_or(0), 0.0);
        for c in centres.chunks_exact_mut(spec.dim) {
            random_unit(&mut rng, c);
        }
        Ok(Self { spec, centres })
    }

    /// The spec this corpus was built from.
    pub fn spec(&self) -> &SynthSpec {
        &self.spec
    }

    /// The cluster centres, row-major `[n_clusters × dim]` (empty in i.i.d. mode).
    pub fn centres(&self) -> &[f32] {
        &self.centres
    }

    /// Number of tokens of document `doc`.
    pub fn doc_len(&self, doc: usize) -> usize {
        match self.spec.tokens_per_doc {
            TokensPerDoc::Fixed(n) => n,
            TokensPerDoc::Range { min, max } => {
                let mut rng = Rng::derive(self.spec.seed, doc as u64);
                min + rng.below(max - min + 1)
            }
        }
    }

    /// Appends document `doc`'s tokens to `out` and returns its token count.
    pub fn doc_into(&self, doc: usize, out: &mut Vec<f32>) -> usize {
        let dim = self.spec.dim;
        let len = self.doc_len(doc);
        let mut rng = Rng::derive(self.spec.seed, doc as u64);
        if matches!(self.spec.tokens_per_doc, TokensPerDoc::Range { .. }) {
            rng.next_u64(); // the draw doc_len used
        }
        let start = out.len();
        out.resize(start + len * dim, 0.0);
        let k = self.spec.n_clusters;
        let topics: Vec<usize> = if k > 0 && self.spec.clusters_per_doc > 0 {
            (0..self.spec.clusters_per_doc).map(|_| rng.below(k)).collect()
        } else {
            Vec::new()
        };
        let sigma = self.spec.noise / (dim as f32).sqrt();
        for tok in out[start..].chunks_exact_mut(dim) {
            if k == 0 {
                random_unit(&mut rng, tok);
                continue;
            }
            let c = if topics.is_empty() { rng.below(k) } else { topics[rng.below(topics.len())] };
            let centre = &self.centres[c * dim..(c + 1) * dim];
            for (t, &m) in tok.iter_mut().zip(centre) {
                *t = m + sigma * rng.normal();
            }
            normalize(tok);
        }
        len
    }

    /// Generates documents `range` as one chunk.
    pub fn chunk(&self, range: std::ops::Range<usize>) -> DocChunk {
        let mut chunk = DocChunk { first_doc: range.start, ..DocChunk::default() };
        for d in range {
            let n = self.doc_into(d, &mut chunk.tokens);
            chunk.doclens.push(n as u32);
        }
        chunk
    }

    /// An iterator over the corpus in chunks of `docs_per_chunk` documents (the last may be
    /// shorter). Only one chunk is held at a time.
    ///
    /// # Panics
    /// If `docs_per_chunk` is zero.
    pub fn chunks(&self, docs_per_chunk: usize) -> impl Iterator<Item = DocChunk> + '_ {
        assert!(docs_per_chunk > 0, "docs_per_chunk must be positive");
        let n = self.spec.n_docs;
        (0..n).step_by(docs_per_chunk).map(move |s| self.chunk(s..(s + docs_per_chunk).min(n)))
    }

    /// The whole corpus in memory (small corpora only).
    pub fn generate_all(&self) -> DocChunk {
        self.chunk(0..self.spec.n_docs)
    }

    /// `n_queries` queries of `query_len` tokens each, row-major, L2-normalised.
    ///
    /// Query `i` picks a random document and, for each of its tokens, a random token of that
    /// document plus Gaussian noise of expected norm `query_noise`, renormalised. Queries depend
    /// only on the corpus seed, `seed` and their index.
    pub fn queries(&self, n_queries: usize, query_len: usize, query_noise: f32, seed: u64) -> Vec<f32> {
        let dim = self.spec.dim;
        let sigma = query_noise / (dim as f32).sqrt();
        let mut out = Vec::with_capacity(n_queries * query_len * dim);
        let mut doc = Vec::new();
        for q in 0..n_queries {
            let mut rng = Rng::derive(self.spec.seed ^ seed.rotate_left(17), STREAM_QUERIES + q as u64);
            doc.clear();
            let d = rng.below(self.spec.n_docs.max(1));
            let len = if self.spec.n_docs > 0 { self.doc_into(d, &mut doc) } else { 0 };
            for _ in 0..query_len {
                let start = out.len();
                if len == 0 {
                    out.resize(start + dim, 0.0);
                    random_unit(&mut rng, &mut out[start..]);
                    continue;
                }
                let t = rng.below(len);
                out.extend(doc[t * dim..(t + 1) * dim].iter().map(|&x| x + sigma * rng.normal()));
                normalize(&mut out[start..]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SynthSpec {
        SynthSpec {
            n_docs: 37,
            tokens_per_doc: TokensPerDoc::Range { min: 3, max: 9 },
            dim: 16,
            n_clusters: 5,
            noise: 0.3,
            clusters_per_doc: 2,
            seed: 7,
        }
    }

    #[test]
    fn chunks_match_whole_corpus() {
        let c = SynthCorpus::new(spec()).unwrap();
        let all = c.generate_all();
        let mut toks = Vec::new();
        let mut lens = Vec::new();
        for ch in c.chunks(5) {
            assert_eq!(ch.first_doc, lens.len());
            toks.extend(ch.tokens);
            lens.extend(ch.doclens);
        }
        assert_eq!(all.tokens, toks);
        assert_eq!(all.doclens, lens);
        assert!(lens.iter().all(|&l| (3..=9).contains(&l)));
        assert_eq!(toks.len(), lens.iter().map(|&l| l as usize).sum::<usize>() * 16);
    }

    #[test]
    fn tokens_are_unit_and_clustered() {
        let c = SynthCorpus::new(spec()).unwrap();
        let all = c.generate_all();
        for t in all.tokens.chunks_exact(16) {
            let n: f32 = t.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
            let best = c
                .centres()
                .chunks_exact(16)
                .map(|m| m.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::MIN, f32::max);
            assert!(best > 0.8, "token far from every centre: {best}");
        }
    }

    #[test]
    fn iid_mode_and_queries() {
        let mut s = spec();
        s.n_clusters = 0;
        let c = SynthCorpus::new(s).unwrap();
        assert!(c.centres().is_empty());
        let q = c.queries(3, 4, 0.1, 1);
        assert_eq!(q.len(), 3 * 4 * 16);
        assert_eq!(q, c.queries(3, 4, 0.1, 1));
        assert_ne!(q, c.queries(3, 4, 0.1, 2));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut s = spec();
        s.dim = 0;
        assert!(SynthCorpus::new(s).is_err());
        let mut s = spec();
        s.tokens_per_doc = TokensPerDoc::Range { min: 4, max: 3 };
        assert!(SynthCorpus::new(s).is_err());
        let mut s = spec();
        s.noise = f32::NAN;
        assert!(SynthCorpus::new(s).is_err());
    }
}
