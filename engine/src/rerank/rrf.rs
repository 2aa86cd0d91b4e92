//! Reciprocal Rank Fusion (Cormack, Clarke and Büttcher, SIGIR 2009): a document's fused score is
//! the sum over the input lists that contain it of `1 / (k + rank)`, ranks counted from 1.
//!
//! Only ranks matter, so lists with incomparable scores (BM25 and MaxSim) fuse without
//! normalisation. Ties in the fused score are broken deterministically: by the best (smallest)
//! rank the document reached in any list, then by the earliest input list holding that rank,
//! then by id; the output does not depend on hash order.

use std::collections::HashMap;

use super::Scored;
use crate::error::{EngineError, Result};

/// The constant of the fusion formula in the original paper and in most engines.
pub const DEFAULT_K: f32 = 60.0;

/// Settings of a fusion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rrf {
    /// The constant `k` added to every rank (60 by default). Larger values flatten the
    /// difference between top and lower ranks.
    pub k: f32,
    /// The rank of the first document of every list (1 by default, as in the paper).
    pub first_rank: u32,
}

impl Default for Rrf {
    fn default() -> Self {
        Rrf { k: DEFAULT_K, first_rank: 1 }
    }
}

/// What the fusion knows about one document while it accumulates.
struct Entry {
    score: f64,
    best_rank: usize,
    best_list: usize,
}

impl Rrf {
    /// Checks the settings: `k + first_rank` must be positive and finite, so that every
    /// contribution is positive and decreasing with rank.
    pub fn validate(&self) -> Result<()> {
        let first = self.k + self.first_rank as f32;
        if !self.k.is_finite() || first <= 0.0 {
            return Err(EngineError::InvalidArgument(format!(
                "RRF k = {} with ranks from {}: k + first rank must be positive and finite",
                self.k, self.first_rank
            )));
        }
        Ok(())
    }

    /// Fuses ranked lists (each best first) and returns every document that appears in any of
    /// them, best first, with its fused score. A document repeated within one list counts once,
    /// at its first (best) position.
    pub fn fuse(&self, lists: &[Vec<Scored>]) -> Result<Vec<Scored>> {
        self.validate()?;
        let mut acc: HashMap<&str, Entry> = HashMap::new();
        for (li, list) in lists.iter().enumerate() {
            let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for (pos, hit) in list.iter().enumerate() {
                if !seen.insert(hit.id.as_str()) {
                    continue;
                }
                let rank = pos + self.first_rank as usize;
                let contribution = 1.0 / (f64::from(self.k) + rank as f64);
                let e =
                    acc.entry(hit.id.as_str()).or_insert(Entry { score: 0.0, best_rank: pos, best_list: li });
                e.score += contribution;
                if pos < e.best_rank {
                    e.best_rank = pos;
                    e.best_list = li;
                }
            }
        }
        let mut fused: Vec<(&str, Entry)> = acc.into_iter().collect();
        fused.sort_by(|(ia, a), (ib, b)| {
            b.score
                .total_cmp(&a.score)
                .then(a.best_rank.cmp(&b.best_rank))
                .then(a.best_list.cmp(&b.best_list))
                .then(ia.cmp(ib)) // unreachable tie, kept so the order is total by construction
        });
        Ok(fused.into_iter().map(|(id, e)| Scored { id: id.to_string(), score: e.score as f32 }).collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn list(ids: &[&str]) -> Vec<Scored> {
        ids.iter().enumerate().map(|(i, id)| Scored { id: id.to_string(), score: -(i as f32) }).collect()
    }

    fn ids(v: &[Scored]) -> Vec<&str> {
        v.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn scores_follow_the_formula() {
        let fused = Rrf::default().fuse(&[list(&["a", "b", "c"]), list(&["b", "d"])]).unwrap();
        assert_eq!(ids(&fused), ["b", "a", "d", "c"]);
        let expect_b = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((f64::from(fused[0].score) - expect_b).abs() < 1e-7);
        assert!((f64::from(fused[1].score) - 1.0 / 61.0).abs() < 1e-7);
        assert!((f64::from(fused[2].score) - 1.0 / 62.0).abs() < 1e-7);
        assert!((f64::from(fused[3].score) - 1.0 / 63.0).abs() < 1e-7);
    }

    #[test]
    fn ties_break_by_best_rank_then_list_then_id() {
        // x: rank 1 in list 0 and 2 in list 1; y the mirror image: equal sums, equal best
        // rank, and x reached it in the earlier list.
        let fused = Rrf::default().fuse(&[list(&["x", "y"]), list(&["y", "x"])]).unwrap();
        assert_eq!(ids(&fused), ["x", "y"]);
        let fused = Rrf::default().fuse(&[list(&["y", "x"]), list(&["x", "y"])]).unwrap();
        assert_eq!(ids(&fused), ["y", "x"]);
        // Equal scores and best ranks in different lists: the earlier list first, whatever the ids.
        let fused = Rrf::default().fuse(&[list(&["q"]), list(&["p"])]).unwrap();
        assert_eq!(ids(&fused), ["q", "p"]);
        let fused = Rrf::default().fuse(&[list(&["q", "p"]), list(&["p", "q"]), list(&["r"])]).unwrap();
        assert_eq!(ids(&fused), ["q", "p", "r"]);
    }

    #[test]
    fn first_rank_and_k_are_configurable() {
        let rrf = Rrf { k: 0.0, first_rank: 1 };
        let fused = rrf.fuse(&[list(&["a", "b"])]).unwrap();
        assert!((fused[0].score - 1.0).abs() < 1e-7 && (fused[1].score - 0.5).abs() < 1e-7);
        let rrf = Rrf { k: 1.0, first_rank: 0 };
        let fused = rrf.fuse(&[list(&["a"])]).unwrap();
        assert!((fused[0].score - 1.0).abs() < 1e-7);
        assert!(Rrf { k: 0.0, first_rank: 0 }.fuse(&[]).is_err());
        assert!(Rrf { k: f32::NAN, first_rank: 1 }.fuse(&[]).is_err());
        assert!(Rrf { k: -2.0, first_rank: 1 }.fuse(&[]).is_err());
    }

    #[test]
    fn duplicates_within_a_list_count_once() {
        let fused = Rrf::default().fuse(&[list(&["a", "a", "b"])]).unwrap();
        assert_eq!(ids(&fused), ["a", "b"]);
        assert!((f64::from(fused[1].score) - 1.0 / 63.0).abs() < 1e-7, "b keeps its own rank");
    }

    #[test]
    fn empty_inputs() {
        assert!(Rrf::default().fuse(&[]).unwrap().is_empty());
        assert!(Rrf::default().fuse(&[vec![], vec![]]).unwrap().is_empty());
    }

    /// Lists of distinct ids drawn from a small alphabet, so that lists overlap.
    fn lists() -> impl Strategy<Value = Vec<Vec<Scored>>> {
        prop::collection::vec(
            prop::sample::subsequence((0..30).collect::<Vec<u32>>(), 0..30).prop_shuffle(),
            0..5,
        )
        .prop_map(|ls| {
            ls.into_iter()
                .map(|l| l.into_iter().map(|d| Scored { id: format!("d{d}"), score: 0.0 }).collect())
                .collect()
        })
    }

    proptest! {
        #[test]
        fn output_is_the_union_without_duplicates(ls in lists()) {
            let fused = Rrf::default().fuse(&ls).unwrap();
            let mut got: Vec<&str> = ids(&fused);
            let n = got.len();
            got.sort_unstable();
            got.dedup();
            prop_assert_eq!(got.len(), n, "no duplicates");
            let mut want: Vec<&str> = ls.iter().flatten().map(|s| s.id.as_str()).collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn scores_are_sorted_and_bounded(ls in lists()) {
            let fused = Rrf::default().fuse(&ls).unwrap();
            for w in fused.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            let max = ls.len() as f32 / 61.0 + 1e-6;
            for s in &fused {
                prop_assert!(s.score > 0.0 && s.score <= max);
            }
        }

        #[test]
        fn list_order_does_not_change_scores(ls in lists()) {
            let a = Rrf::default().fuse(&ls).unwrap();
            let mut rev = ls.clone();
            rev.reverse();
            let b = Rrf::default().fuse(&rev).unwrap();
            let sa: HashMap<&str, f32> = a.iter().map(|s| (s.id.as_str(), s.score)).collect();
            for s in &b {
                prop_assert!((sa[s.id.as_str()] - s.score).abs() < 1e-6);
            }
        }

        #[test]
        fn fusing_one_list_keeps_its_order(ls in lists()) {
            if let Some(first) = ls.first() {
                let fused = Rrf::default().fuse(std::slice::from_ref(first)).unwrap();
                prop_assert_eq!(ids(&fused), ids(first));
            }
        }

        #[test]
        fn a_document_first_in_every_list_wins(ls in lists()) {
            let mut ls = ls;
            for l in &mut ls {
                l.insert(0, Scored { id: "top".into(), score: 1.0 });
            }
            let fused = Rrf::default().fuse(&ls).unwrap();
            if !ls.is_empty() {
                prop_assert_eq!(fused[0].id.as_str(), "top");
            }
        }

        #[test]
        fn deterministic(ls in lists()) {
            prop_assert_eq!(Rrf::default().fuse(&ls).unwrap(), Rrf::default().fuse(&ls).unwrap());
        }
    }
}
