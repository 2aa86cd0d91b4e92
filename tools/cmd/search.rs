//! `colbert-index search`.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use engine::corpus::{read_queries, CorpusReader};
use engine::embeddings::QueryEmbeddings;
use engine::{Hit, Index};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A TREC run: `qid Q0 docid rank score tag`.
    Trec,
    /// One JSON object per query.
    Json,
    /// A readable list per query (with titles when --collection is given).
    Pretty,
}

/// Arguments of `search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// A query text (repeat for several). Encoded with the index's model.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["queries", "query_embeddings"])]
    pub query: Vec<String>,
    /// Queries to run: TSV `qid<TAB>text` or BEIR `queries.jsonl`. Encoded with the index's model.
    #[arg(long, value_name = "FILE", conflicts_with = "query_embeddings")]
    pub queries: Option<PathBuf>,
    /// Precomputed query token embeddings: a safetensors file with `queries` (f16 or f32,
    /// [n_queries, query_len, dim]). Query ids are 0..n-1.
    #[arg(long, value_name = "FILE.safetensors")]
    pub query_embeddings: Option<PathBuf>,
    /// Model directory to encode text queries with (default: the one recorded in the index; it
    /// must match the model the index was built with).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Number of documents to return per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Output format (default: pretty for --query, trec otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// The collection the index was built from, to show titles and text in pretty output.
    #[arg(long, value_name = "FILE")]
    pub collection: Option<PathBuf>,
    /// Run tag written in the last column of the TREC run.
    #[arg(long, default_value = "colbert-index")]
    pub tag: String,
    /// The PLAID knobs.
    #[command(flatten)]
    pub knobs: super::knobs::Knobs,
}

/// Loads the queries named by the arguments: (ids, row-major token matrices).
fn load_queries(args: &SearchArgs, index: &Index) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let dim = index.meta().dim;
    if let Some(path) = &args.query_embeddings {
        let q = QueryEmbeddings::open(path)?;
        if q.dim != dim {
            bail!(
                "{}: queries have dimension {}, the index {} has dimension {dim}",
                path.display(),
                q.dim,
                args.index.display()
            );
        }
        return Ok(((0..q.queries.len()).map(|i| i.to_string()).collect(), q.queries));
    }
    let (ids, texts): (Vec<String>, Vec<String>) = if let Some(path) = &args.queries {
        read_queries(path)?.into_iter().map(|r| (r.id, r.text)).unzip()
    } else if !args.query.is_empty() {
        if let Some(i) = args.query.iter().position(|q| q.trim().is_empty()) {
            bail!("--query number {} is empty", i + 1);
        }
        ((0..args.query.len()).map(|i| i.to_string()).collect(), args.query.clone())
    } else {
        bail!("give the queries: --query TEXT, --queries FILE or --query-embeddings FILE");
    };
    let encoder = super::text::query_encoder(index, &args.index, args.model.as_ref())?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = encoder.encode_queries(&refs)?;
    if let Some(i) = encoded.iter().position(Vec::is_empty) {
        bail!("query `{}` has no tokens after tokenisation", ids[i]);
    }
    Ok((ids, encoded))
}

/// Titles and text of the documents in `hits`, read from the collection.
fn lookup_texts(path: &std::path::Path, wanted: &[String]) -> Result<HashMap<String, (String, String)>> {
    let mut out = HashMap::new();
    for r in CorpusReader::open(path)? {
        let r = r?;
        if wanted.contains(&r.id) {
            out.insert(r.id.clone(), (r.title, r.text));
        }
    }
    Ok(out)
}

fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

/// Runs `search`.
pub fn run(args: &SearchArgs) -> Result<()> {
    let index = Index::open(&args.index)?;
    let (qids, queries) = load_queries(args, &index)?;
    let results: Vec<Vec<Hit>> =
        index.search(&queries, &args.knobs.params(args.k)).context("search failed")?;
    let format = if args.json {
        Format::Json
    } else {
        args.format.unwrap_or(if args.query.is_empty() { Format::Trec } else { Format::Pretty })
    };
    let texts = match (&args.collection, format) {
        (Some(path), Format::Pretty) => {
            let wanted: Vec<String> =
                results.iter().flatten().map(|h| index.doc_id(h.doc).into_owned()).collect();
            lookup_texts(path, &wanted)?
        }
        _ => HashMap::new(),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (qi, hits) in results.iter().enumerate() {
        let qid = &qids[qi];
        match format {
            Format::Json => {
                let list: Vec<_> = hits
                    .iter()
                    .enumerate()
                    .map(|(r, h)| serde_json::json!({"docid": index.doc_id(h.doc), "rank": r + 1, "score": h.score}))
                    .collect();
                writeln!(out, "{}", serde_json::json!({"qid": qid, "results": list}))?;
            }
            Format::Trec => {
                for (r, h) in hits.iter().enumerate() {
                    writeln!(out, "{qid} Q0 {} {} {:.6} {}", index.doc_id(h.doc), r + 1, h.score, args.tag)?;
                }
            }
            Format::Pretty => {
                let label = args.query.get(qi).map_or_else(|| qid.clone(), |t| format!("{t:?}"));
                writeln!(out, "query {label}")?;
                for (r, h) in hits.iter().enumerate() {
                    let id = index.doc_id(h.doc);
                    match texts.get(id.as_ref()) {
                        Some((title, text)) if !title.is_empty() => {
                            writeln!(out, "  {:>2}. {:>7.3}  [{id}] {}", r + 1, h.score, snippet(title, 90))?;
                            writeln!(out, "                 {}", snippet(text, 100))?;
                        }
                        Some((_, text)) => {
                            writeln!(out, "  {:>2}. {:>7.3}  [{id}] {}", r + 1, h.score, snippet(text, 100))?
                        }
                        None => writeln!(out, "  {:>2}. {:>7.3}  [{id}]", r + 1, h.score)?,
                    }
                }
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
