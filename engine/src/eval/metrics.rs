//! Ranking metrics and their computation over a run and its qrels.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use super::qrels::Qrels;
use super::run::Run;
use crate::error::{EngineError, Result};

/// A ranking metric. The cutoff `k` counts documents from rank 1 and must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// nDCG@k: graded gain (the judgment), `log2(rank + 1)` discount, normalised by the ideal
    /// ordering of all judged documents (trec_eval `ndcg_cut.k`).
    Ndcg(usize),
    /// MRR@k: the reciprocal rank of the first relevant document, 0 if none is in the top k
    /// (trec_eval `recip_rank` on the top k).
    Mrr(usize),
    /// Recall@k: relevant documents in the top k over all relevant documents (trec_eval
    /// `recall.k`).
    Recall(usize),
    /// P@k: relevant documents in the top k over k, however many were retrieved (trec_eval
    /// `P.k`).
    Precision(usize),
    /// Mean average precision over the whole ranking (trec_eval `map`).
    Map,
}

/// The metrics reported by default: nDCG@10, MRR@10, Recall@100, Recall@1000 and MAP.
pub const DEFAULT_METRICS: [Metric; 5] =
    [Metric::Ndcg(10), Metric::Mrr(10), Metric::Recall(100), Metric::Recall(1000), Metric::Map];

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Ndcg(k) => write!(f, "nDCG@{k}"),
            Metric::Mrr(k) => write!(f, "MRR@{k}"),
            Metric::Recall(k) => write!(f, "Recall@{k}"),
            Metric::Precision(k) => write!(f, "P@{k}"),
            Metric::Map => write!(f, "MAP"),
        }
    }
}

impl FromStr for Metric {
    type Err = EngineError;

    /// Parses names such as `nDCG@10`, `MRR@10` (or `RR@10`), `Recall@100` (or `R@100`),
    /// `P@10` and `MAP`, ignoring case.
    fn from_str(s: &str) -> Result<Metric> {
        let bad = |why: &str| {
            EngineError::InvalidArgument(format!(
                "metric `{s}`: {why}; expected one of nDCG@k, MRR@k, Recall@k, P@k, MAP"
            ))
        };
        let lower = s.trim().to_ascii_lowercase();
        if lower == "map" {
            return Ok(Metric::Map);
        }
        let (name, k) = lower.split_once('@').ok_or_else(|| bad("missing the cutoff `@k`"))?;
        let k: usize =
            k.parse().ok().filter(|&k| k > 0).ok_or_else(|| bad("the cutoff must be a positive integer"))?;
        match name {
            "ndcg" => Ok(Metric::Ndcg(k)),
            "mrr" | "rr" => Ok(Metric::Mrr(k)),
            "recall" | "r" => Ok(Metric::Recall(k)),
            "p" | "precision" => Ok(Metric::Precision(k)),
            _ => Err(bad("unknown metric")),
        }
    }
}

/// The result of [`evaluate`]: each metric per query and averaged.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The metrics, in the order of every score vector below.
    pub metrics: Vec<Metric>,
    /// The scores of every query in the qrels, by query id.
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// The mean of each metric over every query in the qrels.
    pub mean: Vec<f64>,
    /// Query ids in the qrels that the run does not answer; they score 0.
    pub unanswered: Vec<String>,
    /// Query ids in the run that have no judgments; they are ignored.
    pub unjudged: Vec<String>,
}

impl Evaluation {
    /// The mean of one metric, if it was computed.
    pub fn mean_of(&self, metric: Metric) -> Option<f64> {
        let index = self.metrics.iter().position(|&m| m == metric)?;
        Some(self.mean[index])
    }

    /// The number of queries averaged over (every query in the qrels).
    pub fn num_queries(&self) -> usize {
        self.per_query.len()
    }
}

/// Scores `run` against `qrels` with the conventions of the [module](super) documentation.
///
/// Fails if a metric has a zero cutoff or the run retrieves a document twice for a query.
pub fn evaluate(qrels: &Qrels, run: &Run, metrics: &[Metric]) -> Result<Evaluation> {
    for metric in metrics {
        if let Metric::Ndcg(0) | Metric::Mrr(0) | Metric::Recall(0) | Metric::Precision(0) = metric {
            return Err(EngineError::InvalidArgument(format!("metric {metric} has a zero cutoff")));
        }
    }
    let mut per_query = BTreeMap::new();
    let mut unanswered = Vec::new();
    for (qid, judged) in qrels.iter() {
        let ranking = run.ranking(qid);
        if ranking.is_empty() {
            unanswered.push(qid.to_string());
        }
        let mut seen = HashSet::with_capacity(ranking.len());
        if let Some(dup) = ranking.iter().find(|e| !seen.insert(e.doc_id.as_str())) {
            return Err(EngineError::InvalidArgument(format!(
                "the run retrieves document `{}` more than once for query `{qid}`",
                dup.doc_id
            )));
        }
        let rels: Vec<i32> = ranking.iter().map(|e| judged.get(&e.doc_id).copied().unwrap_or(0)).collect();
        let mut ideal: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let scores = metrics.iter().map(|&m| score(m, &rels, &ideal)).collect();
        per_query.insert(qid.to_string(), scores);
    }
    let n = per_query.len();
    let mean =
        (0..metrics.len())
            .map(|i| {
                if n == 0 {
                    0.0
                } else {
                    per_query.values().map(|s: &Vec<f64>| s[i]).sum::<f64>() / n as f64
                }
            })
            .collect();
    let unjudged = run.query_ids().filter(|q| qrels.query(q).is_none()).map(str::to_string).collect();
    Ok(Evaluation { metrics: metrics.to_vec(), per_query, mean, unanswered, unjudged })
}

/// One metric for one query. `rels` holds the judgment of each ranked document (0 when
/// unjudged); `ideal` the positive judgments of the query, highest first.
fn score(metric: Metric, rels: &[i32], ideal: &[i32]) -> f64 {
    let relevant = |r: &i32| *r >= 1;
    let num_rel = ideal.len();
    match metric {
        Metric::Ndcg(k) => {
            let dcg = |gains: &mut dyn Iterator<Item = i32>| -> f64 {
                gains.take(k).enumerate().map(|(i, g)| f64::from(g.max(0)) / ((i + 2) as f64).log2()).sum()
            };
            let ideal_dcg = dcg(&mut ideal.iter().copied());
            if ideal_dcg > 0.0 {
                dcg(&mut rels.iter().copied()) / ideal_dcg
            } else {
                0.0
            }
        }
        Metric::Mrr(k) => rels.iter().take(k).position(relevant).map_or(0.0, |i| 1.0 / (i + 1) as f64),
        Metric::Recall(k) => {
            if num_rel == 0 {
                0.0
            } else {
                rels.iter().take(k).filter(|r| relevant(r)).count() as f64 / num_rel as f64
            }
        }
        Metric::Precision(k) => rels.iter().take(k).filter(|r| relevant(r)).count() as f64 / k as f64,
        Metric::Map => {
            if num_rel == 0 {
                return 0.0;
            }
            let mut hits = 0usize;
            let mut sum = 0.0;
            for (i, r) in rels.iter().enumerate() {
                if relevant(r) {
                    hits += 1;
                    sum += hits as f64 / (i + 1) as f64;
                }
            }
            sum / num_rel as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::eval::QrelsFormat;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// The worked example checked by hand against pytrec_eval: ties, a negative judgment, an
    /// unjudged document, a query judged only non-relevant, one missing from the run, and one
    /// missing from the qrels.
    #[test]
    fn worked_example() {
        let qrels = Qrels::parse(
            "q1 0 9 1\nq1 0 10 0\nq1 0 a 2\nq1 0 b -1\nq2 0 x 0\nq3 0 d1 1\n",
            QrelsFormat::Trec,
            Path::new("qrels"),
        )
        .unwrap();
        let run = Run::parse(
            "q1 Q0 10 1 1.0 t\nq1 Q0 9 2 1.0 t\nq1 Q0 a 3 0.5 t\nq1 Q0 b 4 2.0 t\nq1 Q0 zz 5 0.5 t\n\
             q2 Q0 x 1 1.0 t\nq4 Q0 y 1 1.0 t\n",
            Path::new("run"),
        )
        .unwrap();
        let metrics = [Metric::Ndcg(10), Metric::Ndcg(1), Metric::Mrr(10), Metric::Recall(100), Metric::Map];
        let e = evaluate(&qrels, &run, &metrics).unwrap();
        // Ranking of q1: b(-1) 9(1) 10(0) zz(unjudged) a(2).
        let q1 = &e.per_query["q1"];
        let dcg = 1.0 / 3f64.log2() + 2.0 / 6f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!(close(q1[0], dcg / idcg) && close(q1[0], 0.5338931479009518), "{q1:?}");
        assert!(close(q1[1], 0.0));
        assert!(close(q1[2], 0.5));
        assert!(close(q1[3], 1.0));
        assert!(close(q1[4], 0.45));
        assert_eq!(e.per_query["q2"], vec![0.0; 5]);
        assert_eq!(e.per_query["q3"], vec![0.0; 5]);
        assert_eq!(e.num_queries(), 3);
        assert!(close(e.mean_of(Metric::Map).unwrap(), 0.15));
        assert_eq!(e.unanswered, ["q3"]);
        assert_eq!(e.unjudged, ["q4"]);
    }

    #[test]
    fn cutoffs_apply() {
        let mut qrels = Qrels::new();
        qrels.insert("q", "r", 1);
        let mut run = Run::new();
        for i in 0..10 {
            run.push("q", &format!("n{i}"), 100.0 - i as f64);
        }
        run.push("q", "r", 0.0);
        let e = evaluate(
            &qrels,
            &run,
            &[Metric::Mrr(10), Metric::Mrr(11), Metric::Precision(20), Metric::Recall(10)],
        )
        .unwrap();
        assert_eq!(e.mean, [0.0, 1.0 / 11.0, 0.05, 0.0]);
    }

    #[test]
    fn rejects_duplicates_and_zero_cutoffs() {
        let mut qrels = Qrels::new();
        qrels.insert("q", "d", 1);
        let mut run = Run::new();
        run.push("q", "d", 1.0);
        assert!(evaluate(&qrels, &run, &[Metric::Ndcg(0)]).is_err());
        run.push("q", "d", 2.0);
        assert!(evaluate(&qrels, &run, &[Metric::Map]).unwrap_err().to_string().contains("more than once"));
    }

    #[test]
    fn parses_metric_names() {
        for m in DEFAULT_METRICS.iter().chain(&[Metric::Precision(5)]) {
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), *m);
        }
        assert_eq!("rr@10".parse::<Metric>().unwrap(), Metric::Mrr(10));
        assert_eq!("R@1000".parse::<Metric>().unwrap(), Metric::Recall(1000));
        assert!("ndcg".parse::<Metric>().is_err());
        assert!("ndcg@0".parse::<Metric>().is_err());
        assert!("bpref@5".parse::<Metric>().is_err());
    }
}
