//! `colbert-index search`.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::build::PrecisionArg;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use engine::corpus::{read_queries, CorpusReader};
use engine::embeddings::QueryEmbeddings;
use engine::rerank::pipeline::{FirstStage, DEFAULT_RERANK_TOP};
use engine::rerank::{
    ColbertRetriever, CrossEncoderOptions, DocTexts, PipelineSpec, Retriever, Rrf, StageTiming, TailSpec,
};
use engine::{Query, SearchParams, Segment};

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

/// The longest `--llm-timeout`: a day.
const MAX_LLM_TIMEOUT: u64 = 86_400;

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
    /// First stage: BM25 alone instead of ColBERT (needs an index built with --bm25).
    #[arg(long, conflicts_with_all = ["hybrid", "query_embeddings"])]
    pub bm25: bool,
    /// First stage: BM25 and ColBERT, fused by Reciprocal Rank Fusion (score = sum over the two
    /// lists of 1 / (--rrf-k + rank), ranks from 1). Needs an index built with --bm25.
    #[arg(long, conflicts_with = "query_embeddings")]
    pub hybrid: bool,
    /// The constant k of Reciprocal Rank Fusion (--hybrid).
    #[arg(long, default_value_t = engine::rerank::rrf::DEFAULT_K, value_name = "K")]
    pub rrf_k: f32,
    /// Documents each first stage retrieves before fusion and reranking (default: the larger of
    /// -k and --rerank-top).
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
    /// Rerank the first stage's best --rerank-top documents: `cross-encoder:DIR` loads a Hugging
    /// Face BertForSequenceClassification checkpoint (config.json, model.safetensors,
    /// tokenizer.json; one logit) and scores `[CLS] query [SEP] document [SEP]`. Document texts
    /// come from --collection if given, else from the index's BM25 store (build --bm25).
    #[arg(long, value_name = "KIND:DIR", conflicts_with = "query_embeddings")]
    pub rerank: Option<String>,
    /// How many of the best first-stage documents --rerank scores; the rest follow in their
    /// first-stage order.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RERANK_TOP)]
    pub rerank_top: usize,
    /// Longest query + document pair the cross-encoder sees, in tokens (default: the model's
    /// limit); longer pairs are truncated from the longer side first.
    #[arg(long, value_name = "TOKENS")]
    pub rerank_max_length: Option<usize>,
    /// Arithmetic of the cross-encoder's matrix products: `auto` is bf16 (f32 accumulation) on CPUs
    /// with AVX-512 BF16 and f32 elsewhere; `f32` reproduces PyTorch's logits within 1e-4.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub rerank_precision: PrecisionArg,
    /// Listwise LLM rerank of the best --llm-top documents after the other stages (RankGPT:
    /// window 20, step 10, back to front; any answer is repaired into a permutation):
    /// `gguf:FILE` runs a local GGUF chat model (llama / qwen2 families; small models are
    /// dequantised to f32 at load, 15-20x faster prompts), `openai:URL` calls an OpenAI-compatible
    /// `/v1/chat/completions` server (llama.cpp, vLLM, Ollama). See docs/LLM_RERANK.md.
    #[arg(long, value_name = "gguf:FILE|openai:URL", conflicts_with = "query_embeddings")]
    pub llm: Option<String>,
    /// How many of the best documents --llm reorders; the rest follow in their previous order.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub llm_top: usize,
    /// Limit on one request to an --llm openai:URL server, sending it and reading the whole
    /// answer (1 to 86400 seconds).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub llm_timeout: u64,
}

impl SearchArgs {
    /// The search parameters these flags select.
    fn params(&self) -> SearchParams {
        self.params_for(self.k)
    }

    /// The search parameters these flags select for a search of depth `k`.
    fn params_for(&self, k: usize) -> SearchParams {
        self.knobs.params(k)
    }

    /// The pipeline these flags describe, or `None` for a plain ColBERT search.
    fn pipeline_spec(&self) -> Result<Option<PipelineSpec>> {
        if !self.bm25 && !self.hybrid && self.rerank.is_none() && self.llm.is_none() {
            return Ok(None);
        }
        let first = match (self.bm25, self.hybrid) {
            (true, _) => FirstStage::Bm25,
            (_, true) => FirstStage::Hybrid,
            _ => FirstStage::Colbert,
        };
        let mut tail = Vec::new();
        if let Some(r) = &self.rerank {
            if self.rerank_top == 0 {
                bail!("--rerank-top must be positive");
            }
            tail.push(TailSpec { kind: r.parse().context("--rerank")?, top: self.rerank_top });
        }
        if let Some(spec) = &self.llm {
            if self.llm_top == 0 {
                bail!("--llm-top must be positive");
            }
            if !(1..=MAX_LLM_TIMEOUT).contains(&self.llm_timeout) {
                bail!("--llm-timeout {}: give 1 to {MAX_LLM_TIMEOUT} seconds", self.llm_timeout);
            }
            let kind = format!("llm:{spec}").parse().context("--llm")?;
            tail.push(TailSpec { kind, top: self.llm_top });
        }
        Ok(Some(PipelineSpec {
            first,
            rrf: Rrf { k: self.rrf_k, ..Rrf::default() },
            depth: self.depth,
            tail,
            cross_encoder: CrossEncoderOptions {
                max_length: self.rerank_max_length,
                precision: self.rerank_precision.into(),
                ..Default::default()
            },
            llm_timeout: Some(std::time::Duration::from_secs(self.llm_timeout)),
        }))
    }
}

/// The query texts named by the arguments: (ids, texts).
fn query_texts(args: &SearchArgs) -> Result<(Vec<String>, Vec<String>)> {
    if let Some(path) = &args.queries {
        Ok(read_queries(path)?.into_iter().map(|r| (r.id, r.text)).unzip())
    } else if !args.query.is_empty() {
        if let Some(i) = args.query.iter().position(|q| q.trim().is_empty()) {
            bail!("--query number {} is empty", i + 1);
        }
        Ok(((0..args.query.len()).map(|i| i.to_string()).collect(), args.query.clone()))
    } else {
        bail!("give the queries: --query TEXT, --queries FILE or --query-embeddings FILE");
    }
}

/// Loads the queries named by the arguments: (ids, row-major token matrices).
fn load_queries(args: &SearchArgs, index: &Segment) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
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
    let (ids, texts) = query_texts(args)?;
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
    let flat = printable(&flat).into_owned();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

/// Per-query results: external id and score, best first; and the stage timings of each query
/// when a pipeline ran.
struct Results {
    qids: Vec<String>,
    hits: Vec<Vec<(String, f32)>>,
    timings: Option<Vec<Vec<StageTiming>>>,
}

/// Plain ColBERT search (text or precomputed query embeddings) over every live segment.
fn colbert_search(args: &SearchArgs, base: &Segment, index: &engine::Index) -> Result<Results> {
    let (qids, queries) = load_queries(args, base)?;
    let dim = index.dim();
    let batch: Vec<Query<'_>> = queries
        .iter()
        .map(|q| Query::tokens(q, dim))
        .collect::<engine::Result<_>>()
        .context("search failed")?;
    let results = index.search_batch(&batch, args.k, &args.params()).context("search failed")?;
    let hits = results.into_iter().map(|r| r.into_iter().map(|h| (h.id, h.score)).collect()).collect();
    Ok(Results { qids, hits, timings: None })
}

/// The whole collection's texts, by id, for rerankers.
fn collection_texts(path: &std::path::Path) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for r in CorpusReader::open(path)? {
        let r = r?;
        let text = r.full_text();
        out.insert(r.id, text);
    }
    Ok(out)
}

/// Runs every query through the pipeline `spec` describes.
fn pipeline_search(args: &SearchArgs, index: &Segment, spec: &PipelineSpec) -> Result<Results> {
    let (qids, texts) = query_texts(args)?;
    let encoder = if spec.uses_colbert() {
        Some(super::text::query_encoder(index, &args.index, args.model.as_ref())?)
    } else {
        None
    };
    let colbert = encoder.as_ref().map(|e| {
        Box::new(ColbertRetriever::new(index, e).with_params(|depth| args.params_for(depth)))
            as Box<dyn Retriever + '_>
    });
    let docs: Option<Box<dyn DocTexts>> = match (&args.collection, spec.tail.is_empty()) {
        (Some(path), false) => Some(Box::new(collection_texts(path)?)),
        _ => None,
    };
    let pipeline = spec.build(&args.index, colbert, docs)?;
    let mut hits = Vec::with_capacity(texts.len());
    let mut timings = Vec::with_capacity(texts.len());
    for (qid, text) in qids.iter().zip(&texts) {
        let r = pipeline.search(text, args.k).with_context(|| format!("query {qid}"))?;
        hits.push(r.hits.into_iter().map(|s| (s.id, s.score)).collect());
        timings.push(r.timings);
    }
    if !timings.is_empty() {
        eprintln!("{}", timing_summary(&pipeline.describe(), &timings));
    }
    Ok(Results { qids, hits, timings: Some(timings) })
}

/// One line: the pipeline and the mean milliseconds per query of each stage.
fn timing_summary(description: &str, timings: &[Vec<StageTiming>]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut total: HashMap<&str, f64> = HashMap::new();
    for t in timings.iter().flatten() {
        if !total.contains_key(t.stage.as_str()) {
            order.push(&t.stage);
        }
        *total.entry(&t.stage).or_default() += t.ms;
    }
    let n = timings.len() as f64;
    let parts: Vec<String> = order.iter().map(|s| format!("{s} {:.1}", total[s] / n)).collect();
    format!("pipeline {description}; mean ms per query over {} queries: {}", timings.len(), parts.join(", "))
}

/// `s` with its control characters escaped (`\u{1b}`), for the text outputs: ids are checked
/// at build, but an index written before that check may still hold them.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Runs `search`.
pub fn run(args: &SearchArgs) -> Result<()> {
    if args.tag.is_empty() || args.tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "--tag \"{}\": a run tag is one field of the TREC run, so it must be non-empty and hold no \
             whitespace or control characters",
            args.tag.escape_debug()
        );
    }

    let live = engine::Index::open(&args.index)?;
    let index = Segment::open(&args.index)?;
    let results = match args.pipeline_spec()? {
        None => colbert_search(args, &index, &live)?,
        Some(spec) => {
            let m = live.manifest();
            if m.segments.len() > 1 || m.segments.iter().any(|s| !s.deleted.is_empty()) {
                bail!(
                    "{}: the index has added or deleted documents; --bm25, --hybrid, --rerank and --llm \
                     need it compacted and rebuilt with --bm25 (plain ColBERT search works as it is)",
                    args.index.display()
                );
            }
            pipeline_search(args, &index, &spec)?
        }
    };
    let format = if args.json {
        Format::Json
    } else {
        args.format.unwrap_or(if args.query.is_empty() { Format::Trec } else { Format::Pretty })
    };
    let texts = match (&args.collection, format) {
        (Some(path), Format::Pretty) => {
            let wanted: Vec<String> = results.hits.iter().flatten().map(|h| h.0.clone()).collect();
            lookup_texts(path, &wanted)?
        }
        _ => HashMap::new(),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (qi, hits) in results.hits.iter().enumerate() {
        let qid = &results.qids[qi];
        match format {
            Format::Json => {
                let list: Vec<_> = hits
                    .iter()
                    .enumerate()
                    .map(|(r, (id, score))| serde_json::json!({"docid": id, "rank": r + 1, "score": score}))
                    .collect();
                let mut line = serde_json::json!({"qid": qid, "results": list});
                if let Some(t) = &results.timings {
                    line["timings"] = serde_json::to_value(&t[qi])?;
                }
                writeln!(out, "{line}")?;
            }
            Format::Trec => {
                for (r, (id, score)) in hits.iter().enumerate() {
                    let id = printable(id);
                    writeln!(out, "{qid} Q0 {id} {} {score:.6} {}", r + 1, args.tag)?;
                }
            }
            Format::Pretty => {
                let label = args.query.get(qi).map_or_else(|| qid.clone(), |t| format!("{t:?}"));
                writeln!(out, "query {label}")?;
                for (r, (id, score)) in hits.iter().enumerate() {
                    let (texts, id) = (texts.get(id), printable(id));
                    match texts {
                        Some((title, text)) if !title.is_empty() => {
                            writeln!(out, "  {:>2}. {:>7.3}  [{id}] {}", r + 1, score, snippet(title, 90))?;
                            writeln!(out, "                 {}", snippet(text, 100))?;
                        }
                        Some((_, text)) => {
                            writeln!(out, "  {:>2}. {:>7.3}  [{id}] {}", r + 1, score, snippet(text, 100))?
                        }
                        None => writeln!(out, "  {:>2}. {:>7.3}  [{id}]", r + 1, score)?,
                    }
                }
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
