//! `colbert-index eval`: scores a run against relevance judgments.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use engine::eval::{
    compare, evaluate, Comparison, Evaluation, Metric, Qrels, Run, DEFAULT_RESAMPLES, MAX_RESAMPLES,
};

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

    /// A second run to compare against, scored on the same judgments: prints each metric's
    /// mean for both, their difference (run − baseline) with a 95% confidence interval by the
    /// paired bootstrap over queries, the two-sided p-value of a paired randomisation test,
    /// and how many queries got better, worse or stayed tied. Tells a real difference from
    /// the luck of which queries were judged.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Resamples for the bootstrap and for the randomisation test of --baseline (1 to 1000000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RESAMPLES, requires = "baseline")]
    pub resamples: usize,

    /// Seed of the resampling of --baseline (the same seed gives the same interval).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "baseline")]
    pub seed: u64,
}

/// Runs the `eval` command.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    if !(1..=MAX_RESAMPLES).contains(&args.resamples) {
        anyhow::bail!("--resamples {}: give 1 to {MAX_RESAMPLES}", args.resamples);
    }
    let qrels = Qrels::from_path(&args.qrels).context("cannot read the qrels")?;
    let run = Run::from_path(&args.run).context("cannot read the run")?;
    if qrels.is_empty() {
        anyhow::bail!("{}: no judgments", args.qrels.display());
    }
    let evaluation = evaluate(&qrels, &run, &args.metrics)?;
    let comparison = match &args.baseline {
        Some(path) => {
            let baseline = Run::from_path(path).context("cannot read the baseline run")?;
            let base_eval = evaluate(&qrels, &baseline, &args.metrics)?;
            Some(compare(&base_eval, &evaluation, args.resamples, args.seed)?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut json = to_json(args, &evaluation);
        if let Some(c) = &comparison {
            json["comparison"] = comparison_json(args, c);
        }
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, args, &evaluation)?;
        if let Some(c) = &comparison {
            writeln!(out)?;
            write_comparison(&mut out, args, c)?;
        }
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

fn comparison_json(args: &EvalArgs, c: &Comparison) -> serde_json::Value {
    let metrics: serde_json::Map<_, _> = c
        .metrics
        .iter()
        .map(|m| {
            let value = serde_json::json!({
                "baseline": m.baseline,
                "run": m.run,
                "delta": m.delta,
                "ci95": [m.ci95.0, m.ci95.1],
                "p_value": m.p_value,
                "better": m.better,
                "worse": m.worse,
                "tied": m.tied,
            });
            (m.metric.to_string(), value)
        })
        .collect();
    serde_json::json!({
        "baseline": args.baseline,
        "queries": c.queries,
        "resamples": c.resamples,
        "seed": c.seed,
        "metrics": metrics,
    })
}

fn write_comparison(out: &mut impl Write, args: &EvalArgs, c: &Comparison) -> std::io::Result<()> {
    let baseline = args.baseline.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    writeln!(out, "against the baseline {baseline}, paired over the {} judged queries", c.queries)?;
    writeln!(
        out,
        "(95% CI: paired bootstrap; p: paired randomisation test; {} resamples each, seed {})",
        c.resamples, c.seed
    )?;
    writeln!(out)?;
    let width = c.metrics.iter().map(|m| m.metric.to_string().len()).max().unwrap_or(0).max(6);
    writeln!(
        out,
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>19}  {:>6}  {:>6}  {:>6}  {:>6}",
        "metric", "baseline", "run", "delta", "95% CI of delta", "p", "better", "worse", "tied"
    )?;
    for m in &c.metrics {
        let ci = format!("[{:+.4}, {:+.4}]", m.ci95.0, m.ci95.1);
        writeln!(
            out,
            "{:<width$}  {:>8.4}  {:>8.4}  {:>+8.4}  {ci:>19}  {:>6.4}  {:>6}  {:>6}  {:>6}",
            m.metric.to_string(),
            m.baseline,
            m.run,
            m.delta,
            m.p_value,
            m.better,
            m.worse,
            m.tied
        )?;
    }
    Ok(())
}
