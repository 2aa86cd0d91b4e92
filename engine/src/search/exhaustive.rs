//! Exhaustive MaxSim over every document of an uncompressed index: the exact oracle.
//!
//! Documents are split into chunks scored in parallel (rayon); each chunk scores every query of
//! the batch against a document while its tokens are still in cache, and keeps one [`TopK`] per
//! query; the per-chunk selections are merged at the end.

use half::f16;
use index_format::{FormatError, IndexReader};
use rayon::prelude::*;

use super::{Hit, TopK};
use kernels::maxsim::{PreparedQuery, Scorer};

/// Documents per parallel work unit.
const CHUNK_DOCS: usize = 256;

/// Exact top-`k` of each query over all documents of `reader`. Queries are row-major
/// `[len × dim]` and already validated against the index dimension.
///
/// # Errors
/// If `doc_offsets.u64` is corrupt between its ends (opening an index checks only those): every
/// document's offsets are checked first, in one pass.
pub fn search(reader: &IndexReader, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>, FormatError> {
    reader.check_doc_offsets()?;
    let dim = reader.meta().dim;
    let prepared: Vec<PreparedQuery> = queries.iter().map(|q| PreparedQuery::new(q, dim)).collect();
    Ok(search_with(reader.doc_offsets(), reader.embeddings(), dim, &prepared, k))
}

/// Exact top-`k` over documents given as token offsets into a row-major f16 embedding matrix.
///
/// # Panics
/// If the offsets decrease or a document's tokens are past the end of `embeddings` ([`search`]
/// checks this for an index's files first).
pub fn search_with(
    doc_offsets: &[u64],
    embeddings: &[f16],
    dim: usize,
    queries: &[PreparedQuery],
    k: usize,
) -> Vec<Vec<Hit>> {
    let n_docs = doc_offsets.len().saturating_sub(1);
    let n_chunks = n_docs.div_ceil(CHUNK_DOCS);
    let merged = (0..n_chunks)
        .into_par_iter()
        .fold(
            || vec![TopK::new(k); queries.len()],
            |mut tops, chunk| {
                let docs = chunk * CHUNK_DOCS..((chunk + 1) * CHUNK_DOCS).min(n_docs);
                let rows: Vec<&[f16]> = docs
                    .clone()
                    .map(|doc| {
                        &embeddings[doc_offsets[doc] as usize * dim..doc_offsets[doc + 1] as usize * dim]
                    })
                    .collect();
                let mut scores = vec![0.0; rows.len()];
                for (query, top) in queries.iter().zip(tops.iter_mut()) {
                    Scorer::new(query).score_f16_many(&rows, &mut scores);
                    for (doc, &score) in docs.clone().zip(&scores) {
                        top.push(doc as u32, score);
                    }
                }
                tops
            },
        )
        .reduce(
            || vec![TopK::new(k); queries.len()],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.merge(y);
                }
                a
            },
        );
    merged.into_iter().map(TopK::into_sorted).collect()
}

/// The best `k` of `docs` by exact MaxSim over their f16 rows (`rows(d)`, row-major
/// `[n × dim]`), scored in parallel units of `unit` documents, a batch per unit
/// (`Scorer::score_f16_many`: on the AMX tiles where the process may use them).
///
/// # Errors
/// The first error `rows` returns.
pub fn top_of<'a, E: Send>(
    query: &PreparedQuery,
    docs: &[u32],
    k: usize,
    unit: usize,
    rows: impl Fn(u32) -> Result<&'a [f16], E> + Sync,
) -> Result<Vec<Hit>, E> {
    let top = docs
        .par_chunks(unit.max(1))
        .map(|chunk| -> Result<TopK, E> {
            let rows = chunk.iter().map(|&d| rows(d)).collect::<Result<Vec<_>, E>>()?;
            let mut scores = vec![0.0; chunk.len()];
            Scorer::new(query).score_f16_many(&rows, &mut scores);
            let mut top = TopK::new(k);
            for (&d, &score) in chunk.iter().zip(&scores) {
                top.push(d, score);
            }
            Ok(top)
        })
        .try_reduce(
            || TopK::new(k),
            |mut a, b| {
                a.merge(b);
                Ok(a)
            },
        )?;
    Ok(top.into_sorted())
}
