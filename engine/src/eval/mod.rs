//! Retrieval evaluation with trec_eval's conventions.
//!
//! - [`Qrels`]: relevance judgments, read from TREC (`qid 0 docid rel`) or BEIR
//!   (`query-id<TAB>corpus-id<TAB>score`, with a header line) files.
//! - [`Run`]: ranked results, read from TREC run files (`qid Q0 docid rank score tag`).
//! - [`evaluate`]: nDCG@k, MRR@k, Recall@k, P@k and MAP per query and on average.
//! - [`compare`]: two runs on the same judgments, query by query: the mean difference with a
//!   paired-bootstrap confidence interval and a paired randomisation test.
//!
//! # Conventions
//!
//! These follow trec_eval 9 (and so `pytrec_eval`), against which the fixtures in
//! `tests/data/eval/` are checked:
//!
//! - A run is ranked by score, highest first; equal scores are ordered by document id in
//!   *descending* byte order. The rank column of a run file is ignored.
//! - A document is relevant when its judgment is at least 1. Judgments of 0 or below are
//!   non-relevant; unjudged documents are non-relevant too.
//! - nDCG's gain is the judgment itself (negative judgments give 0), discounted by
//!   `log2(rank + 1)`; the ideal ranking sorts every judged document of the query by gain.
//! - The mean of each metric is taken over **every query in the qrels**, including queries the
//!   run does not answer, which score 0 (trec_eval's `-c`). Queries in the run without
//!   judgments are ignored. A query whose judgments are all non-relevant scores 0 and counts.

pub mod compare;
pub mod metrics;
pub mod qrels;
pub mod run;

pub use compare::{compare, Comparison, MetricComparison, DEFAULT_RESAMPLES, MAX_RESAMPLES};
pub use metrics::{evaluate, Evaluation, Metric, DEFAULT_METRICS};
pub use qrels::{Qrels, QrelsFormat};
pub use run::{Run, RunEntry};
