//! `colbert-index rerank`: score a first stage's candidates exactly by MaxSim.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::corpus::read_queries;
use engine::embeddings::QueryEmbeddings;
use engine::{Index, Query};

/// Arguments of `rerank`.
#[derive(Args, Debug)]
pub struct RerankArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// The first stage's candidates: a TREC run (`qid Q0 docid rank score tag`) or TSV
    /// `qid<TAB>docid` lines. Every listed document is scored (duplicates once); ids not in the
    /// index are reported.
    #[arg(long, value_name = "FILE")]
    pub candidates: PathBuf,
    /// Precomputed query token embeddings: a safetensors file with `queries` (f16 or f32,
    /// [n_queries, query_len, dim]); query ids are 0..n-1.
    #[arg(long, value_name = "FILE.safetensors", conflicts_with_all = ["queries", "query"])]
    pub query_embeddings: Option<PathBuf>,
    /// Queries: TSV `qid<TAB>text` or BEIR `queries.jsonl`, encoded with the index's model.
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    pub queries: Option<PathBuf>,
    /// One query text, encoded with the index's model: every candidate in FILE is scored for
    /// it (under the first query id of FILE).
    #[arg(long, value_name = "TEXT")]
    pub query: Option<String>,
    /// Documents returned per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Print one JSON object per query (`qid`, `results`, `missing`) instead of a TREC run.
    #[arg(long)]
    pub json: bool,
    /// Run tag written in the last column of the TREC run.
    #[arg(long, default_value = "colbert-rerank")]
    pub tag: String,
}

/// Candidates per query id, queries in the order they first appear.
pub struct Candidates {
    /// Query ids in file order.
    pub order: Vec<String>,
    /// Each query's candidate ids in file order.
    pub by_query: HashMap<String, Vec<String>>,
}

/// Reads a TREC run or `qid<TAB>docid` lines.
pub fn read_candidates(path: &Path) -> Result<Candidates> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut out = Candidates { order: Vec::new(), by_query: HashMap::new() };
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> =
            if line.contains('\t') { line.split('\t').collect() } else { line.split_whitespace().collect() };
        let (qid, docid) = match fields.len() {
            2 => (fields[0].trim(), fields[1].trim()),
            6 => (fields[0], fields[2]),
            k => bail!(
                "{}: line {}: {k} fields; expected a TREC run line (qid Q0 docid rank score tag) or qid<TAB>docid",
                path.display(),
                n + 1
            ),
        };
        if qid.is_empty() || docid.is_empty() {
            bail!("{}: line {}: empty query or document id", path.display(), n + 1);
        }
        if !out.by_query.contains_key(qid) {
            out.order.push(qid.to_string());
        }
        out.by_query.entry(qid.to_string()).or_default().push(docid.to_string());
    }
    if out.order.is_empty() {
        bail!("{}: no candidates", path.display());
    }
    Ok(out)
}

/// Runs `rerank`.
pub fn run(args: &RerankArgs) -> Result<()> {
    let index = Index::open(&args.index)?;
    let mut cands = read_candidates(&args.candidates)?;
    let dim = index.dim();
    // Query id -> tokens.
    let mut tokens: HashMap<String, Vec<f32>> = HashMap::new();
    if let Some(path) = &args.query_embeddings {
        let q = QueryEmbeddings::open(path)?;
        if q.dim != dim {
            bail!("{}: queries have dimension {}, the index has {dim}", path.display(), q.dim);
        }
        tokens.extend(q.queries.into_iter().enumerate().map(|(i, t)| (i.to_string(), t)));
    } else if let Some(text) = &args.query {
        if text.trim().is_empty() {
            bail!("--query is empty");
        }
        let first = cands.order[0].clone();
        let all: Vec<String> = cands.order.iter().flat_map(|q| cands.by_query[q].clone()).collect();
        cands = Candidates { order: vec![first.clone()], by_query: HashMap::from([(first.clone(), all)]) };
        let encoder = index.encoder().with_context(|| "cannot encode --query")?;
        tokens.insert(first, encoder.encode_queries(&[text.as_str()])?.pop().unwrap_or_default());
    } else if let Some(path) = &args.queries {
        let records = read_queries(path)?;
        let wanted: Vec<_> = records.into_iter().filter(|r| cands.by_query.contains_key(&r.id)).collect();
        let encoder =
            index.encoder().with_context(|| format!("cannot encode the queries of {}", path.display()))?;
        let texts: Vec<&str> = wanted.iter().map(|r| r.text.as_str()).collect();
        let encoded = encoder.encode_queries(&texts)?;
        tokens.extend(wanted.iter().map(|r| r.id.clone()).zip(encoded));
    } else {
        bail!("give the queries: --query-embeddings FILE, --queries FILE or --query TEXT");
    }
    if let Some(q) = cands.order.iter().find(|q| !tokens.contains_key(*q)) {
        bail!("{}: query {q} has candidates but no query (check the query ids)", args.candidates.display());
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    for qid in &cands.order {
        let q = Query::tokens(&tokens[qid], dim).with_context(|| format!("query {qid}"))?;
        let r = index.rerank(q, &cands.by_query[qid], args.k).with_context(|| format!("query {qid}"))?;
        if args.json {
            let list: Vec<_> = r
                .hits
                .iter()
                .enumerate()
                .map(|(i, h)| serde_json::json!({"docid": h.id, "rank": i + 1, "score": h.score}))
                .collect();
            writeln!(out, "{}", serde_json::json!({"qid": qid, "results": list, "missing": r.missing}))?;
        } else {
            for (i, h) in r.hits.iter().enumerate() {
                writeln!(out, "{qid} Q0 {} {} {:.6} {}", h.id, i + 1, h.score, args.tag)?;
            }
            if !r.missing.is_empty() {
                out.flush()?;
                let shown: Vec<&str> = r.missing.iter().take(20).map(String::as_str).collect();
                let more = if r.missing.len() > 20 {
                    format!(" and {} more", r.missing.len() - 20)
                } else {
                    String::new()
                };
                eprintln!(
                    "query {qid}: {} candidate ids are not in the index: {}{more}",
                    r.missing.len(),
                    shown.join(", ")
                );
            }
        }
    }
    out.flush()?;
    Ok(())
}
