use engine::{BuildOptions, IndexBuilder, Segment};
use tempfile::TempDir;

use crate::common::*;

/// Builds an index through the library and checks exhaustive search against naive MaxSim.
#[test]
fn exhaustive_matches_naive_maxsim() {
    for (dim, n_docs, max_len, qlen, k) in [(8, 50, 5, 1, 3), (32, 300, 40, 32, 10), (128, 120, 70, 7, 200)] {
        let dir = TempDir::new().unwrap();
        let (emb, lens) = random_docs(dim as u64, n_docs, max_len, dim);
        let mut b = IndexBuilder::create(&dir.path().join("i"), dim, BuildOptions::default()).unwrap();
        let mut off = 0;
        for (i, &l) in lens.iter().enumerate() {
            let n = l as usize * dim;
            b.add(&format!("d{i}"), &emb[off..off + n]).unwrap();
            off += n;
        }
        b.finish().unwrap();
        let index = Segment::open(&dir.path().join("i")).unwrap();
        index.verify().unwrap();
        let queries: Vec<Vec<f32>> =
            (0..4).map(|s| unit_vectors(&mut Rng::new(1000 + s), qlen, dim)).collect();
        let results = index.search_exhaustive(&queries, k).unwrap();
        for (q, hits) in queries.iter().zip(&results) {
            let mut expected: Vec<(usize, f64)> = Vec::new();
            let mut off = 0;
            for (i, &l) in lens.iter().enumerate() {
                let n = l as usize * dim;
                expected.push((i, naive_maxsim(q, &emb[off..off + n], dim)));
                off += n;
            }
            expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            assert_eq!(hits.len(), k.min(n_docs));
            let tol = 1e-4 * qlen as f64;
            let kth = expected[hits.len() - 1].1;
            for (rank, h) in hits.iter().enumerate() {
                // Each returned score is the true score of that document...
                let truth = expected.iter().find(|x| x.0 == h.doc as usize).unwrap().1;
                assert!(
                    (h.score as f64 - truth).abs() <= tol,
                    "dim {dim}: doc {} score {} vs {truth}",
                    h.doc,
                    h.score
                );
                // ...no better document was left out...
                assert!(
                    truth >= kth - tol,
                    "dim {dim}: doc {} (true {truth}) is below the k-th best {kth}",
                    h.doc
                );
                // ...and hits come best first.
                if rank > 0 {
                    assert!(hits[rank - 1].score >= h.score);
                }
            }
        }
    }
}

#[test]
fn empty_and_mismatched_queries_are_errors() {
    let dir = TempDir::new().unwrap();
    let mut b = IndexBuilder::create(&dir.path().join("i"), 8, BuildOptions::default()).unwrap();
    b.add("a", &[0.5; 16]).unwrap();
    assert!(b.add("a", &[0.5; 8]).unwrap_err().to_string().contains("duplicate"));
    assert!(b.add("b", &[]).is_err());
    assert!(b.add("c", &[0.5; 12]).is_err());
    b.finish().unwrap();
    let index = Segment::open(&dir.path().join("i")).unwrap();
    assert!(index.search_exhaustive(&[vec![]], 10).unwrap_err().to_string().contains("empty query"));
    assert!(index.search_exhaustive(&[vec![0.1; 12]], 10).is_err());
    assert!(index.search_exhaustive(&[vec![f32::NAN; 8]], 10).is_err());
    let hits = index.search_exhaustive(&[vec![0.1; 8]], 0).unwrap();
    assert!(hits[0].is_empty());
}
