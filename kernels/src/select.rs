//! Selection of the best rows per column of a score matrix: how stage 1 of a search picks the
//! centroids each query token probes, in one pass ([`top_by_column`]) or block by block as the
//! scores are computed ([`ColumnTop`], WARP mode's probes).

use crate::detect::Isa;

/// Appends to `out`, for every column `q` of the row-major `[rows × nq]` matrix `scores`, the
/// row indices of the `n` highest values of that column (ties to the lower row), in one pass
/// over the rows; compiled for AVX-512 or AVX2 where the CPU has them (the same rows on every
/// path: only comparisons).
pub fn top_by_column(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    let mut top = ColumnTop::new(nq, n);
    top.feed(scores, 0);
    for col in top.finish() {
        out.extend(col.iter().map(|&(_, j)| j));
    }
}

/// The `n` best entries of every column over blocks of rows, each block's columns as
/// [`ColumnTop::finish`] returns them (every block with the same number of columns), best first,
/// ties to the lower row.
///
/// # Panics
/// If the blocks differ in their number of columns.
pub fn merge_columns(blocks: &[Vec<Vec<(f32, u32)>>], n: usize) -> Vec<Vec<(f32, u32)>> {
    let Some(first) = blocks.first() else {
        return Vec::new();
    };
    assert!(blocks.iter().all(|b| b.len() == first.len()), "merge_columns: column counts differ");
    (0..first.len())
        .map(|q| {
            let mut col: Vec<(f32, u32)> = blocks.iter().flat_map(|b| b[q].iter().copied()).collect();
            if col.len() > n && n > 0 {
                col.select_nth_unstable_by(n - 1, best_first);
            }
            col.truncate(n);
            col.sort_unstable_by(best_first);
            col
        })
        .collect()
}

/// Best first, ties to the lower row.
fn best_first(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The `n` best rows of every column of a row-major matrix with `nq` columns, fed block by block
/// (so that each block can be chosen from while it is in cache and then overwritten), in row
/// order or not. Each column keeps a buffer of up to `2n` entries above its bar (a value must
/// exceed it to enter; minus infinity at first): a row that beats no column's bar costs one
/// vectorised comparison, an entry one push, and a full buffer is cut back to its `n` best,
/// whose last sets the bar. A value equal to the bar never enters: fed in row order, an equal
/// value comes from a higher row and loses the tie anyway; fed out of order, the result is the
/// same wherever no two rows of a column hold equal values (and `-0.0` and `+0.0` count as
/// equal here). Columns merged from several selectors ([`merge_columns`]) equal one selector
/// fed everything, under the same condition.
#[derive(Debug, Clone)]
pub struct ColumnTop {
    nq: usize,
    n: usize,
    best: Vec<Vec<(f32, u32)>>,
    bar: Vec<f32>,
}

impl ColumnTop {
    /// A selector of the `n` best rows of each of `nq` columns.
    pub fn new(nq: usize, n: usize) -> Self {
        ColumnTop {
            nq,
            n,
            best: (0..nq).map(|_| Vec::with_capacity(2 * n)).collect(),
            bar: vec![f32::NEG_INFINITY; nq],
        }
    }

    /// Feeds the rows of `scores` (`rows × nq`, row-major), the first one numbered `first_row`;
    /// compiled for AVX-512 or AVX2 where the CPU has them (only comparisons: the same rows on
    /// every path).
    pub fn feed(&mut self, scores: &[f32], first_row: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Isa::get();
            if isa.avx512 {
                // SAFETY: AVX-512F was detected at run time.
                return unsafe { self.feed_avx512(scores, first_row) };
            }
            if isa.avx2 {
                // SAFETY: AVX2 was detected at run time.
                return unsafe { self.feed_avx2(scores, first_row) };
            }
        }
        self.feed_body(scores, first_row)
    }

    /// [`ColumnTop::feed_body`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn feed_avx512(&mut self, scores: &[f32], first_row: u32) {
        self.feed_body(scores, first_row)
    }

    /// [`ColumnTop::feed_body`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn feed_avx2(&mut self, scores: &[f32], first_row: u32) {
        self.feed_body(scores, first_row)
    }

    /// [`ColumnTop::feed`]'s body.
    #[inline(always)]
    fn feed_body(&mut self, scores: &[f32], first_row: u32) {
        let (nq, n) = (self.nq, self.n);
        if nq == 0 || n == 0 {
            return;
        }
        let ColumnTop { best, bar, .. } = self;
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
                    col.push((row[q], first_row + j as u32));
                    if col.len() == 2 * n {
                        col.select_nth_unstable_by(n - 1, best_first);
                        col.truncate(n);
                        bar[q] = col[n - 1].0;
                    }
                }
            }
        }
    }

    /// Per column, its `n` best rows with their values, best first (ties to the lower row);
    /// fewer where fewer rows held a value above minus infinity (a NaN never enters).
    pub fn finish(self) -> Vec<Vec<(f32, u32)>> {
        let n = self.n;
        let mut best = self.best;
        for col in &mut best {
            col.sort_unstable_by(best_first);
            col.truncate(n);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_picks_what_a_full_sort_picks() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 64) as f32 / 8.0
        };
        for (rows, nq, n) in [(500, 32, 12), (300, 70, 4), (40, 3, 40), (9, 1, 1)] {
            let scores: Vec<f32> = (0..rows * nq).map(|_| next()).collect();
            let mut fast = Vec::new();
            top_by_column(&scores, nq, n, &mut fast);
            let mut portable = ColumnTop::new(nq, n);
            portable.feed_body(&scores, 0);
            let plain: Vec<u32> = portable.finish().into_iter().flatten().map(|(_, j)| j).collect();
            assert_eq!(fast, plain);
            // Blocks of rows, merged, pick the same rows (the values are never -0.0 here).
            for block in [1, 7, 64, rows] {
                let parts: Vec<_> = scores
                    .chunks(block * nq)
                    .enumerate()
                    .map(|(i, s)| {
                        let mut top = ColumnTop::new(nq, n);
                        top.feed(s, (i * block) as u32);
                        top.finish()
                    })
                    .collect();
                let merged: Vec<u32> =
                    merge_columns(&parts, n).into_iter().flatten().map(|(_, j)| j).collect();
                assert_eq!(merged, fast, "blocks of {block} rows");
                // Two selectors fed alternate blocks, merged.
                let mut two = [ColumnTop::new(nq, n), ColumnTop::new(nq, n)];
                for (i, s) in scores.chunks(block * nq).enumerate() {
                    two[i % 2].feed(s, (i * block) as u32);
                }
                let [a, b] = two;
                let merged: Vec<u32> = merge_columns(&[a.finish(), b.finish()], n)
                    .into_iter()
                    .flatten()
                    .map(|(_, j)| j)
                    .collect();
                assert_eq!(merged, fast, "two selectors, blocks of {block} rows");
            }
            let mut want = Vec::new();
            for q in 0..nq {
                let mut all: Vec<u32> = (0..rows as u32).collect();
                let col = |j: u32| scores[j as usize * nq + q];
                all.sort_by(|&a, &b| col(b).total_cmp(&col(a)).then(a.cmp(&b)));
                want.extend_from_slice(&all[..n.min(rows)]);
            }
            assert_eq!(fast, want);
        }
    }
}
