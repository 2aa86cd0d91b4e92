//! Selection of the best rows per column of a score matrix: how stage 1 of a search picks the
//! centroids each query token probes.

use crate::detect::Isa;

/// Appends to `out`, for every column `q` of the row-major `[rows × nq]` matrix `scores`, the
/// row indices of the `n` highest values of that column (ties to the lower row), best first, in
/// one pass over the rows; compiled for AVX-512 or AVX2 where the CPU has them (the same rows on
/// every path: only comparisons).
pub fn top_by_column(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    let mut top = TopByColumn::new(nq, n);
    top.push(scores, 0);
    top.finish(out);
}

/// [`top_by_column`] fed block by block: the best `n` rows per column of a matrix whose rows
/// arrive in blocks (e.g. while each block's scores are in the cache), and of several such
/// selections over disjoint rows merged (one per thread).
///
/// Each column keeps a buffer of up to `2n` entries above its bar (a value must exceed it to
/// enter; minus infinity at first): a row that beats no column's bar costs one vectorised
/// comparison, an entry one push, and a full buffer is cut back to its `n` best, whose last sets
/// the bar. Rows are pushed in increasing order, so a value equal to the bar could never
/// displace an entry (ties go to the lower row).
#[derive(Clone, Debug)]
pub struct TopByColumn {
    n: usize,
    best: Vec<Vec<(f32, u32)>>,
    bar: Vec<f32>,
}

impl TopByColumn {
    /// An empty selection of the best `n` rows of each of `nq` columns.
    pub fn new(nq: usize, n: usize) -> Self {
        TopByColumn {
            n,
            best: (0..nq).map(|_| Vec::with_capacity(2 * n)).collect(),
            bar: vec![f32::NEG_INFINITY; nq],
        }
    }

    /// Takes in the row-major `[rows × nq]` block `scores`, whose first row is row `base` of the
    /// whole matrix. Blocks must come in increasing row order.
    pub fn push(&mut self, scores: &[f32], base: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Isa::get();
            if isa.avx512 {
                // SAFETY: AVX-512F was detected at run time.
                return unsafe { self.push_avx512(scores, base) };
            }
            if isa.avx2 {
                // SAFETY: AVX2 was detected at run time.
                return unsafe { self.push_avx2(scores, base) };
            }
        }
        self.push_body(scores, base)
    }

    /// [`TopByColumn::push`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn push_avx512(&mut self, scores: &[f32], base: u32) {
        self.push_body(scores, base)
    }

    /// [`TopByColumn::push`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn push_avx2(&mut self, scores: &[f32], base: u32) {
        self.push_body(scores, base)
    }

    #[inline(always)]
    fn push_body(&mut self, scores: &[f32], base: u32) {
        let (n, nq) = (self.n, self.bar.len());
        if nq == 0 || n == 0 {
            return;
        }
        let TopByColumn { best, bar, .. } = self;
        for (j, row) in scores.chunks_exact(nq).enumerate() {
            if !row.iter().zip(bar.iter()).fold(false, |hit, (&v, &b)| hit | (v > b)) {
                continue;
            }
            // The columns this row beats, 64 at a time as a bit mask, so that only those are
            // visited: a branch per column would be mispredicted while rows still enter often.
            for first in (0..nq).step_by(64) {
                let end = (first + 64).min(nq);
                let mut hits = row[first..end]
                    .iter()
                    .zip(&bar[first..end])
                    .enumerate()
                    .fold(0u64, |m, (i, (&v, &b))| m | (((v > b) as u64) << i));
                while hits != 0 {
                    let q = first + hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    let col = &mut best[q];
                    col.push((row[q], base + j as u32));
                    if col.len() == 2 * n {
                        col.select_nth_unstable_by(n - 1, order);
                        col.truncate(n);
                        bar[q] = col[n - 1].0;
                    }
                }
            }
        }
    }

    /// Takes in `other`, a selection over other rows (the best of both are kept, ties to the lower
    /// row, whichever order selections are merged in). Rows pushed afterwards must come after
    /// every row either has seen.
    pub fn merge(&mut self, other: TopByColumn) {
        let n = self.n;
        for ((col, bar), (more, other_bar)) in
            self.best.iter_mut().zip(&mut self.bar).zip(other.best.into_iter().zip(other.bar))
        {
            col.extend(more);
            if col.len() > n {
                col.select_nth_unstable_by(n - 1, order);
                col.truncate(n);
            }
            *bar = bar.max(other_bar);
            if col.len() == n {
                *bar = bar.max(col[n - 1].0);
            }
        }
    }

    /// Appends to `out`, for every column, its best rows, best first: `n` of them, or every row
    /// seen where fewer came.
    pub fn finish(mut self, out: &mut Vec<u32>) {
        let n = self.n;
        for col in &mut self.best {
            col.sort_unstable_by(order);
            out.extend(col.iter().take(n).map(|&(_, j)| j));
        }
    }
}

/// Best first, ties to the lower row.
fn order(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_and_every_split_picks_what_a_full_sort_picks() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (rows, nq, n) in [(500, 32, 12), (300, 70, 4), (40, 3, 40), (9, 1, 1), (700, 5, 30)] {
            // Few distinct values: many ties.
            let scores: Vec<f32> = (0..rows * nq).map(|_| (next() % 64) as f32 / 8.0).collect();
            let mut want = Vec::new();
            for q in 0..nq {
                let mut all: Vec<u32> = (0..rows as u32).collect();
                let col = |j: u32| scores[j as usize * nq + q];
                all.sort_by(|&a, &b| col(b).total_cmp(&col(a)).then(a.cmp(&b)));
                want.extend_from_slice(&all[..n.min(rows)]);
            }
            let mut fast = Vec::new();
            top_by_column(&scores, nq, n, &mut fast);
            assert_eq!(fast, want, "dispatched path");
            let mut plain = TopByColumn::new(nq, n);
            plain.push_body(&scores, 0);
            let mut got = Vec::new();
            plain.finish(&mut got);
            assert_eq!(got, want, "portable path");
            // Split into runs of blocks (each run one selection, fed block by block), merged in
            // order, as threads do.
            for _ in 0..8 {
                let mut cuts: Vec<usize> = (0..4).map(|_| next() as usize % (rows + 1)).collect();
                cuts.extend([0, rows]);
                cuts.sort_unstable();
                let mut runs = cuts.windows(2).map(|w| {
                    let mut top = TopByColumn::new(nq, n);
                    let mut at = w[0];
                    while at < w[1] {
                        let end = (at + 1 + next() as usize % 50).min(w[1]);
                        top.push(&scores[at * nq..end * nq], at as u32);
                        at = end;
                    }
                    top
                });
                let mut all = runs.next().expect("one run at least");
                runs.for_each(|r| all.merge(r));
                let mut got = Vec::new();
                all.finish(&mut got);
                assert_eq!(got, want, "cuts {cuts:?}");
            }
        }
    }
}
