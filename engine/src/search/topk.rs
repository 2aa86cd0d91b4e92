//! Bounded top-k selection with a deterministic order: higher score first, then lower document
//! number, so that equal scores rank the same way run to run and thread count to thread count.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Hit;

/// Heap entry ordered so that the *worst* hit is at the top of a max-heap.
#[derive(Debug, Clone, Copy)]
struct Worst(Hit);

impl Worst {
    fn better_than(&self, other: &Worst) -> Ordering {
        self.0.score.total_cmp(&other.0.score).then_with(|| other.0.doc.cmp(&self.0.doc))
    }
}

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reverse: the worst hit compares greatest and sits on top.
        other.better_than(self)
    }
}

/// Keeps the best `k` hits seen.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    /// An empty selection of at most `k` hits (any `k`: room is reserved for at most 4096 and
    /// grows with the hits actually offered).
    pub fn new(k: usize) -> Self {
        Self { k, heap: BinaryHeap::with_capacity(k.saturating_add(1).min(4096)) }
    }

    /// The score a new hit must beat to enter, once full.
    pub fn threshold(&self) -> Option<f32> {
        (self.heap.len() == self.k).then(|| self.heap.peek().map(|w| w.0.score)).flatten()
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, doc: u32, score: f32) {
        if self.k == 0 {
            return;
        }
        let w = Worst(Hit { doc, score });
        if self.heap.len() < self.k {
            self.heap.push(w);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if w.better_than(&top) == Ordering::Greater {
                *top = w;
            }
        }
    }

    /// Merges another selection into this one.
    pub fn merge(&mut self, other: TopK) {
        for w in other.heap {
            self.push(w.0.doc, w.0.score);
        }
    }

    /// The hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Worst> = self.heap.into_vec();
        v.sort_by(|a, b| b.better_than(a));
        v.into_iter().map(|w| w.0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_full_sort(scores in proptest::collection::vec(-4i32..4, 0..200), k in 0usize..20) {
            let mut t = TopK::new(k);
            for (i, &s) in scores.iter().enumerate() {
                t.push(i as u32, s as f32);
            }
            let mut all: Vec<(u32, f32)> = scores.iter().enumerate().map(|(i, &s)| (i as u32, s as f32)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            let got: Vec<(u32, f32)> = t.into_sorted().into_iter().map(|h| (h.doc, h.score)).collect();
            prop_assert_eq!(got, all);
        }
    }
}
