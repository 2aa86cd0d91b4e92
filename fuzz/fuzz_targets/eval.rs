//! Relevance judgments, TREC runs and metric names (`eval`): the input's text up to its first
//! NUL is parsed as qrels (the detected format, or each format), the rest as a run; then every
//! metric is computed and the run compared with itself, and the first line is parsed as a
//! metric name.
#![no_main]

use std::path::Path;
use std::str::FromStr;

use engine::eval::qrels::{Qrels, QrelsFormat};
use engine::eval::run::Run;
use engine::eval::{compare, evaluate, Metric, DEFAULT_METRICS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (qrels_text, run_text) = text.split_once('\0').unwrap_or((text, text));
    let _ = Metric::from_str(text.lines().next().unwrap_or(""));
    let path = Path::new("input");
    let formats = match QrelsFormat::detect(qrels_text) {
        Some(f) => vec![f],
        None => vec![QrelsFormat::Trec, QrelsFormat::Beir],
    };
    let run = Run::parse(run_text, path);
    for format in formats {
        let Ok(qrels) = Qrels::parse(qrels_text, format, path) else { continue };
        let _ = qrels.to_text(format);
        let Ok(run) = &run else { continue };
        let metrics = [&DEFAULT_METRICS[..], &[Metric::Precision(5), Metric::Ndcg(1)]].concat();
        if let Ok(e) = evaluate(&qrels, run, &metrics) {
            let _ = compare(&e, &e, 20, 1);
        }
    }
    if let Ok(run) = run {
        let _ = run.to_text("fuzz");
    }
});
