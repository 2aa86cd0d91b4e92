//! `colbert-index eval`: scores a run against relevance judgments.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use engine::eval::{evaluate, Evaluation, Metric, Qrels, Run};

/// Score a ranked run against relevance judgments, with trec_eval's conventions.
///
/// Every query in the judgments is averaged; a query the run does not answer scores 0
/// (trec_eval -c). Queries of the run without judgments are ignored.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The run to score: a TREC run file, one `qid Q0 docid rank score tag` line per
    /// result. Results are ranked by score, ties by descending document id, as trec_eval
    /// does; the rank column is ignored.
    #[arg(long, value_name = "FILE")]
    pub run: PathBuf,

    /// The relevance judgments: TREC qrels (`qid 0 docid relevance`) or BEIR TSV
    /// (`query-id corpus-id score` after a header line), told apart by their column count.
    /// A relevance of 1 or more is relevant, and is the gain for nDCG.
    #[arg(long, value_name = "FILE")]
    pub qrels: PathBuf,

    /// The metrics to report, comma separated: nDCG@k, MRR@k, Recall@k, P@k and MAP, in
    /// any case.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "nDCG@10,MRR@10,Recall@100,Recall@1000,MAP"
    )]
    pub metrics: Vec<Metric>,

    /// Print JSON instead of a table: the means, the query counts and, with --per-query,
    /// every query's scores.
    #[arg(long)]
    pub json: bool,

    /// Also print the scores of every judged query, not only the means.
    #[arg(long)]
    pub per_query: bool,
}

/// Runs the `eval` command.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let qrels = Qrels::from_path(&args.qrels).context("cannot read the qrels")?;
    let run = Run::from_path(&args.run).context("cannot read the run")?;
    if qrels.is_empty() {
        anyhow::bail!("{}: no judgments", args.qrels.display());
    }
    let evaluation = evaluate(&qrels, &run, &args.metrics)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = to_json(args, &evaluation);
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, args, &evaluation)?;
    }
    out.flush()?;
    Ok(())
}

fn scores_json(metrics: &[Metric], scores: &[f64]) -> serde_json::Value {
    metrics
        .iter()
        .zip(scores)
        .map(|(m, s)| (m.to_string(), serde_json::json!(s)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn to_json(args: &EvalArgs, e: &Evaluation) -> serde_json::Value {
    let mut json = serde_json::json!({
        "run": args.run,
        "qrels": args.qrels,
        "queries": e.num_queries(),
        "unanswered": e.unanswered,
        "unjudged": e.unjudged,
        "mean": scores_json(&e.metrics, &e.mean),
    });
    if args.per_query {
        let per_query: serde_json::Map<_, _> =
            e.per_query.iter().map(|(q, s)| (q.clone(), scores_json(&e.metrics, s))).collect();
        json["per_query"] = per_query.into();
    }
    json
}

fn write_table(out: &mut impl Write, args: &EvalArgs, e: &Evaluation) -> std::io::Result<()> {
    writeln!(out, "run:   {}", args.run.display())?;
    writeln!(out, "qrels: {}", args.qrels.display())?;
    write!(out, "{} judged queries", e.num_queries())?;
    if !e.unanswered.is_empty() {
        write!(out, ", {} not in the run (scored 0)", e.unanswered.len())?;
    }
    if !e.unjudged.is_empty() {
        write!(out, "; {} run queries without judgments ignored", e.unjudged.len())?;
    }
    writeln!(out)?;
    writeln!(out)?;
    let names: Vec<String> = e.metrics.iter().map(Metric::to_string).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(6);
    if args.per_query {
        let qid_width = e.per_query.keys().map(String::len).max().unwrap_or(0).max(5);
        write!(out, "{:<qid_width$}", "query")?;
        for name in &names {
            write!(out, "  {name:>width$}")?;
        }
        writeln!(out)?;
        let rows = e.per_query.iter().map(|(q, s)| (q.as_str(), s.as_slice()));
        for (qid, scores) in rows.chain(std::iter::once(("mean", e.mean.as_slice()))) {
            write!(out, "{qid:<qid_width$}")?;
            for score in scores {
                write!(out, "  {score:>width$.4}")?;
            }
            writeln!(out)?;
        }
    } else {
        for (name, mean) in names.iter().zip(&e.mean) {
            writeln!(out, "{name:<width$}  {mean:.4}")?;
        }
    }
    Ok(())
}
