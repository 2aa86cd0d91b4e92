//! Selection of the best rows per column of a score matrix: how stage 1 of a search picks the
//! centroids each query token probes.

use crate::detect::Isa;

/// Appends to `out`, for every column `q` of the row-major `[rows × nq]` matrix `scores`, the
/// row indices of the `n` highest values of that column (ties to the lower row), in one pass
/// over the rows; compiled for AVX-512 or AVX2 where the CPU has them (the same rows on every
/// path: only comparisons).
pub fn top_by_column(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = Isa::get();
        if isa.avx512 {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { body_avx512(scores, nq, n, out) };
        }
        if isa.avx2 {
            // SAFETY: AVX2 was detected at run time.
            return unsafe { body_avx2(scores, nq, n, out) };
        }
    }
    body(scores, nq, n, out)
}

/// [`body`] compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn body_avx512(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    body(scores, nq, n, out)
}

/// [`body`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn body_avx2(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    body(scores, nq, n, out)
}

/// [`top_by_column`]'s body. Each column keeps a buffer of up to `2n` entries above its bar (a
/// value must exceed it to enter; minus infinity at first): a row that beats no column's bar
/// costs one vectorised comparison, an entry one push, and a full buffer is cut back to its `n`
/// best, whose last sets the bar. Later rows have higher indices, so a value equal to the bar
/// could never displace an entry (ties go to the lower row).
#[inline(always)]
fn body(scores: &[f32], nq: usize, n: usize, out: &mut Vec<u32>) {
    if nq == 0 || n == 0 {
        return;
    }
    // Best first, ties to the lower row.
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut best: Vec<Vec<(f32, u32)>> = (0..nq).map(|_| Vec::with_capacity(2 * n)).collect();
    let mut bar = vec![f32::NEG_INFINITY; nq];
    for (j, row) in scores.chunks_exact(nq).enumerate() {
        if !row.iter().zip(&bar).fold(false, |hit, (&v, &b)| hit | (v > b)) {
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
                col.push((row[q], j as u32));
                if col.len() == 2 * n {
                    col.select_nth_unstable_by(n - 1, order);
                    col.truncate(n);
                    bar[q] = col[n - 1].0;
                }
            }
        }
    }
    for col in &mut best {
        col.sort_unstable_by(order);
        out.extend(col.iter().take(n).map(|&(_, j)| j));
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
            let (mut fast, mut plain) = (Vec::new(), Vec::new());
            top_by_column(&scores, nq, n, &mut fast);
            body(&scores, nq, n, &mut plain);
            assert_eq!(fast, plain);
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
