//! `colbert-index search`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::embeddings::QueryEmbeddings;
use engine::{Index, SearchParams};

/// Arguments of `search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Query token embeddings: a safetensors file with `queries` (f16 or f32,
    /// [n_queries, query_len, dim]). Query ids are 0..n-1.
    #[arg(long, value_name = "FILE.safetensors")]
    pub query_embeddings: PathBuf,
    /// Number of documents to return per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Print one JSON object per query instead of a TREC run.
    #[arg(long)]
    pub json: bool,
    /// Run tag written in the last column of the TREC run.
    #[arg(long, default_value = "colbert-index")]
    pub tag: String,
    /// Compressed index: centroids probed per query token (default by k: 4 up to k=100, then 8).
    #[arg(long, value_name = "N")]
    pub ncells: Option<usize>,
    /// Compressed index: centroid score below which a centroid is ignored by the approximate
    /// score (default by k: 0.45 up to k=100, then 0.4).
    #[arg(long, value_name = "SCORE")]
    pub threshold: Option<f32>,
    /// Compressed index: candidates kept after the pruned approximate score; a quarter of them
    /// are scored exactly (default by k: 256 up to k=10, 1024 up to 100, then max(4k, 4096)).
    #[arg(long, value_name = "N")]
    pub ndocs: Option<usize>,
    /// Compressed index with --store-f16: score the final candidates from decompressed
    /// residuals, then rescore the best N exactly from the f16 embeddings (default: score them
    /// all exactly).
    #[arg(long, value_name = "N", conflicts_with = "no_rescore")]
    pub rescore: Option<usize>,
    /// Compressed index: never use the f16 embeddings; score decompressed residuals only.
    #[arg(long)]
    pub no_rescore: bool,
    /// Compressed index: skip centroid pruning and score every document (decompressed).
    #[arg(long)]
    pub exhaustive: bool,
}

impl SearchArgs {
    /// The search parameters these flags select.
    fn params(&self) -> SearchParams {
        let d = SearchParams::for_k(self.k);
        SearchParams {
            ncells: self.ncells.unwrap_or(d.ncells),
            centroid_score_threshold: self.threshold.unwrap_or(d.centroid_score_threshold),
            ndocs: self.ndocs.unwrap_or(d.ndocs),
            rescore: if self.no_rescore { Some(0) } else { self.rescore },
            exhaustive: self.exhaustive,
            ..d
        }
    }
}

/// Runs `search`.
pub fn run(args: &SearchArgs) -> Result<()> {
    let index = Index::open(&args.index)?;
    let queries = QueryEmbeddings::open(&args.query_embeddings)?;
    let dim = index.meta().dim;
    if queries.dim != dim {
        anyhow::bail!(
            "{}: queries have dimension {}, the index {} has dimension {dim}",
            args.query_embeddings.display(),
            queries.dim,
            args.index.display()
        );
    }
    let results = index.search(&queries.queries, &args.params()).context("search failed")?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (qid, hits) in results.iter().enumerate() {
        if args.json {
            let list: Vec<_> = hits
                .iter()
                .enumerate()
                .map(|(r, h)| serde_json::json!({"docid": index.doc_id(h.doc), "rank": r + 1, "score": h.score}))
                .collect();
            writeln!(out, "{}", serde_json::json!({"qid": qid.to_string(), "results": list}))?;
        } else {
            for (r, h) in hits.iter().enumerate() {
                writeln!(out, "{qid} Q0 {} {} {:.6} {}", index.doc_id(h.doc), r + 1, h.score, args.tag)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
