//! Every compiled kernel this CPU runs, against the scalar oracle.
//!
//! # Tolerance
//!
//! f16 → f32 widening is exact, so the kernels and the oracle see the same numbers and differ only
//! in rounding. The oracle rounds each product and adds in dimension order; the kernels fuse each
//! multiply-add, also in dimension order. Each computed dot product is within `γ_dim·A` of the
//! exact one, where `A = Σ_k |q_k·d_k|` and `γ_n = n·u / (1 − n·u)`, `u = 2⁻²⁴` (Higham, *Accuracy
//! and Stability of Numerical Algorithms*, §3.1), so kernel and oracle dot products differ by at
//! most `2·γ_dim·A`. `max` over document tokens does not increase that difference, and both sum the
//! per-token maxima in query order, adding at most `2·γ_qlen·Σ_q max_d A` more. So
//!
//! `|kernel − oracle| ≤ 2·(γ_dim + γ_qlen) · Σ_q max_d Σ_k |q_k·d_k|`,
//!
//! computed per case in f64. It scales with the data's magnitude rather than with the score, so it
//! stays meaningful when positive and negative terms cancel. In practice the observed error is
//! far smaller (see `observed_error_is_small`).

use half::f16;
use proptest::prelude::*;

use super::*;

/// A tiny deterministic generator (splitmix64), so the big random arrays cost no proptest shrinking.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

fn gamma(n: usize) -> f64 {
    let u = f64::from(f32::EPSILON) / 2.0;
    n as f64 * u / (1.0 - n as f64 * u)
}

/// `Σ_q max_d Σ_k |q_k·d_k|`, the magnitude the error bounds scale with.
fn mass(query: &[f32], doc: &[f32], dim: usize) -> f64 {
    query
        .chunks_exact(dim)
        .map(|q| {
            doc.chunks_exact(dim)
                .map(|d| q.iter().zip(d).map(|(&a, &b)| f64::from(a).abs() * f64::from(b).abs()).sum::<f64>())
                .fold(0.0, f64::max)
        })
        .sum()
}

/// The bound from the module docs.
fn tolerance(query: &[f32], doc: &[f32], dim: usize) -> f64 {
    let qlen = query.len() / dim;
    2.0 * (gamma(dim) + gamma(qlen)) * mass(query, doc, dim) * 1.000_001 + f64::from(f32::MIN_POSITIVE)
}

/// Scores `doc` (placed at `offset` elements into a larger buffer) with every available kernel, in
/// both storage types, and checks each against the oracle. Returns the worst error / tolerance.
fn check_case(query: &[f32], doc: &[f32], dim: usize, offset: usize) -> f64 {
    let doc16: Vec<f16> = doc.iter().map(|&x| f16::from_f32(x)).collect();
    let doc_w: Vec<f32> = doc16.iter().map(|x| x.to_f32()).collect();
    let mut buf16 = vec![f16::from_f32(7.0); offset + doc16.len() + 3];
    buf16[offset..offset + doc16.len()].copy_from_slice(&doc16);
    let mut buf32 = vec![7.0f32; offset + doc_w.len() + 3];
    buf32[offset..offset + doc_w.len()].copy_from_slice(&doc_w);
    let (d16, d32) = (&buf16[offset..offset + doc16.len()], &buf32[offset..offset + doc_w.len()]);

    let want = scalar::maxsim_f32(query, &doc_w, dim);
    assert_eq!(want, scalar::maxsim_f16(query, &doc16, dim));
    let tol = tolerance(query, &doc_w, dim);
    let prepared = PreparedQuery::new(query, dim);
    let mut worst = 0.0f64;
    for kernel in Kernel::available() {
        let mut scorer = Scorer::with_kernel(&prepared, kernel);
        for (what, got) in [("f16", scorer.score_f16(d16)), ("f32", scorer.score_f32(d32))] {
            let err = (f64::from(got) - f64::from(want)).abs();
            assert!(
                err <= tol,
                "{} {what}: got {got}, oracle {want}, |err| {err:e} > tol {tol:e} \
                 (dim {dim}, qlen {}, doclen {}, offset {offset})",
                kernel.name(),
                query.len() / dim,
                doc.len() / dim,
            );
            worst = worst.max(err / tol);
        }
    }
    worst
}

fn random_case(seed: u64, dim: usize, qlen: usize, doclen: usize, offset: usize) -> f64 {
    let mut rng = Rng(seed);
    let query = rng.vec(qlen * dim);
    let doc = rng.vec(doclen * dim);
    check_case(&query, &doc, dim, offset)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn kernels_match_oracle(
        seed in any::<u64>(),
        dim in (1usize..=128).prop_map(|x| x * 8),
        qlen in 1usize..=64,
        doclen in 1usize..=300,
        offset in 0usize..=9,
    ) {
        // Keep a debug-build case under ~1.5M multiply-adds per kernel.
        let doclen = doclen.min((1_500_000 / (dim * qlen)).max(1));
        random_case(seed, dim, qlen, doclen, offset);
    }

    #[test]
    fn kernels_match_oracle_small_dims(
        seed in any::<u64>(),
        dim in prop::sample::select(vec![8usize, 16, 24, 96, 128, 384]),
        qlen in 1usize..=64,
        doclen in 1usize..=300,
        offset in prop::sample::select(vec![0usize, 1, 3, 5, 8]),
    ) {
        let doclen = doclen.min((1_500_000 / (dim * qlen)).max(1));
        random_case(seed, dim, qlen, doclen, offset);
    }
}

/// Block and strip edges: query lengths around 16/32 and document lengths around 6/8 and their
/// multiples, for the common model dimensions.
#[test]
fn tile_edges() {
    let mut seed = 1;
    for dim in [8, 96, 128, 384] {
        for qlen in [1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64] {
            for doclen in [1, 2, 5, 6, 7, 8, 9, 12, 13, 16, 17, 25, 49] {
                seed += 1;
                random_case(seed, dim, qlen, doclen, (seed % 5) as usize);
            }
        }
    }
}

#[test]
fn long_documents_and_largest_dim() {
    random_case(11, 128, 32, 300, 1);
    random_case(12, 1024, 33, 61, 3);
    random_case(13, 96, 64, 300, 0);
}

/// Dimensions that are not multiples of 8 still work (the kernels only widen with a scalar tail).
#[test]
fn odd_dimensions() {
    for dim in [1, 3, 7, 9, 17, 100] {
        random_case(dim as u64, dim, 19, 13, 1);
    }
}

/// Unit-length vectors, as ColBERT produces: the error stays many orders below the bound.
#[test]
fn observed_error_is_small() {
    let mut rng = Rng(99);
    let (dim, qlen, doclen) = (128, 32, 180);
    let mut unit = |n: usize| {
        let mut v = rng.vec(n * dim);
        for t in v.chunks_exact_mut(dim) {
            let norm = t.iter().map(|x| x * x).sum::<f32>().sqrt();
            t.iter_mut().for_each(|x| *x /= norm);
        }
        v
    };
    let (query, doc) = (unit(qlen), unit(doclen));
    let ratio = check_case(&query, &doc, dim, 0);
    assert!(ratio < 0.1, "error uses {ratio} of the bound");
}

#[test]
fn empty_inputs_score_zero() {
    let dim = 16;
    let mut rng = Rng(5);
    let query = PreparedQuery::new(&rng.vec(3 * dim), dim);
    let empty_query = PreparedQuery::new(&[], dim);
    assert!(empty_query.is_empty());
    let doc: Vec<f16> = rng.vec(4 * dim).into_iter().map(f16::from_f32).collect();
    for kernel in Kernel::available() {
        assert_eq!(Scorer::with_kernel(&query, kernel).score_f16(&[]), 0.0);
        assert_eq!(Scorer::with_kernel(&query, kernel).score_f32(&[]), 0.0);
        assert_eq!(Scorer::with_kernel(&empty_query, kernel).score_f16(&doc), 0.0);
    }
}

/// NaN, infinities, zeros and extreme f16 values must not panic, whatever they score.
#[test]
fn degenerate_values_do_not_panic() {
    let dim = 24;
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 65504.0, -65504.0, 6e-8];
    for (i, &special) in specials.iter().enumerate() {
        let mut rng = Rng(i as u64);
        let mut query = rng.vec(20 * dim);
        let mut doc = rng.vec(9 * dim);
        let (qi, di) = (i * 7 % query.len(), i * 11 % doc.len());
        query[qi] = special;
        doc[di] = special;
        let all_special_doc = vec![special; 7 * dim];
        let prepared = PreparedQuery::new(&query, dim);
        let all_special = PreparedQuery::new(&vec![special; 17 * dim], dim);
        for kernel in Kernel::available() {
            for q in [&prepared, &all_special] {
                let mut scorer = Scorer::with_kernel(q, kernel);
                for d in [&doc, &all_special_doc] {
                    let d16: Vec<f16> = d.iter().map(|&x| f16::from_f32(x)).collect();
                    let _ = scorer.score_f16(&d16);
                    let _ = scorer.score_f32(d);
                }
            }
        }
    }
}

/// A scorer reused across documents of different lengths gives the same result as a fresh one.
#[test]
fn scorer_reuse() {
    let dim = 128;
    let mut rng = Rng(3);
    let query = PreparedQuery::new(&rng.vec(32 * dim), dim);
    let docs: Vec<Vec<f16>> = [180, 1, 7, 64, 13]
        .iter()
        .map(|&n| rng.vec(n * dim).into_iter().map(f16::from_f32).collect())
        .collect();
    for kernel in Kernel::available() {
        let mut reused = Scorer::with_kernel(&query, kernel);
        for doc in &docs {
            let fresh = Scorer::with_kernel(&query, kernel).score_f16(doc);
            assert_eq!(reused.score_f16(doc).to_bits(), fresh.to_bits(), "{}", kernel.name());
        }
    }
}

#[test]
#[should_panic(expected = "not a multiple of dim")]
fn ragged_document_panics() {
    let query = PreparedQuery::new(&[1.0; 16], 8);
    let _ = Scorer::new(&query).score_f16(&[f16::ONE; 12]);
}

#[test]
fn packing_layout() {
    let dim = 3;
    let tokens: Vec<f32> = (0..17 * dim).map(|x| x as f32).collect();
    let q = PreparedQuery::new(&tokens, dim);
    assert_eq!(q.strips(), 2);
    assert_eq!(q.packed.len(), 2 * dim * STRIP);
    for (i, token) in tokens.chunks_exact(dim).enumerate() {
        for (k, &x) in token.iter().enumerate() {
            assert_eq!(q.packed[((i / STRIP) * dim + k) * STRIP + i % STRIP], x);
        }
    }
    // Padding lanes of the last strip are zero.
    assert!(q.packed[dim * STRIP..].chunks_exact(STRIP).all(|lanes| lanes[1..].iter().all(|&x| x == 0.0)));
}

#[test]
fn detection_is_cached_and_consistent() {
    let k = Kernel::detect();
    assert_eq!(k, Kernel::detect());
    assert!(k.is_available());
    assert!(Kernel::available().contains(&k));
    assert_eq!(Kernel::available()[0], Kernel::Scalar);
    if cfg!(feature = "scalar-only") {
        assert_eq!(k, Kernel::Scalar);
    } else {
        assert_eq!(Some(&k), Kernel::available().last());
    }
}

#[test]
fn unavailable_kernel_is_refused() {
    let q = PreparedQuery::new(&[1.0; 8], 8);
    for kernel in Kernel::ALL {
        assert_eq!(Scorer::try_with_kernel(&q, kernel).is_some(), kernel.is_available());
    }
    if cfg!(target_arch = "x86_64") {
        assert!(Scorer::try_with_kernel(&q, Kernel::Neon).is_none());
    }
}

#[test]
fn calibration_reports_a_positive_peak() {
    for kernel in Kernel::available() {
        if let Some(gflops) = calibrate::fma_peak_gflops(kernel, 10_000) {
            assert!(gflops > 0.0 && gflops.is_finite(), "{}: {gflops}", kernel.name());
        }
    }
}

/// `score_f16_many` gives each document `score_f16`'s bits on every kernel, and on the AMX tiles
/// (where usable) the oracle's score within their error bound: `γ(6·dim)` of the absolute
/// products (six exact products per dimension) plus the oracle's own.
#[test]
fn batches_score_as_single_documents() {
    let dim = 96;
    let mut rng = Rng(11);
    let query_tokens = rng.vec(20 * dim);
    let query = PreparedQuery::new(&query_tokens, dim);
    let docs: Vec<Vec<f16>> = [5, 0, 40, 1, 33, 17]
        .iter()
        .map(|&n| rng.vec(n * dim).into_iter().map(f16::from_f32).collect())
        .collect();
    let views: Vec<&[f16]> = docs.iter().map(Vec::as_slice).collect();
    for kernel in Kernel::available() {
        let mut scorer = Scorer::with_kernel(&query, kernel);
        assert!(!scorer.uses_tiles());
        let mut many = vec![f32::NAN; docs.len()];
        scorer.score_f16_many(&views, &mut many);
        for (doc, got) in docs.iter().zip(&many) {
            assert_eq!(got.to_bits(), scorer.score_f16(doc).to_bits(), "{}", kernel.name());
        }
    }
    let Some(mut tiles) = Scorer::with_tiles(&query) else { return };
    assert!(tiles.uses_tiles());
    let mut many = vec![f32::NAN; docs.len()];
    tiles.score_f16_many(&views, &mut many);
    for (doc, got) in docs.iter().zip(&many) {
        let wide: Vec<f32> = doc.iter().map(|x| x.to_f32()).collect();
        let want = scalar::maxsim_f16(&query_tokens, doc, dim);
        let bound =
            (gamma(6 * dim) + gamma(dim) + 2.0 * gamma(20)) * mass(&query_tokens, &wide, dim) * 1.000_001;
        assert!(f64::from((got - want).abs()) <= bound, "tiles: {got} against {want}");
    }
}
