//! `colbert-index search`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::embeddings::QueryEmbeddings;
use engine::Index;

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
    let results = index.search_exhaustive(&queries.queries, args.k).context("search failed")?;
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
