//! The evaluator against trec_eval: `tests/data/eval/expected.json` holds what pytrec_eval
//! computes for the runs and qrels next to it (`tools/fixtures/make_eval_fixtures.py`
//! writes them all). Also checks the bundled Cranfield conversion in `data/cranfield/`.

use std::path::PathBuf;

use engine::collections::{ClassicCollection, Collection};
use engine::eval::{evaluate, Metric, Qrels, Run};
use serde_json::Value;

/// pytrec_eval prints doubles exactly; both sides sum in the same order, so agreement is far
/// tighter than this.
const TOLERANCE: f64 = 1e-9;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/data/eval").join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn check_run(run_name: &str, qrels: &Qrels, want: &Value) {
    let run = Run::from_path(&fixture(run_name)).unwrap();
    let names = strings(&want["metrics"]);
    let metrics: Vec<Metric> = names.iter().map(|n| n.parse().unwrap()).collect();
    let got = evaluate(qrels, &run, &metrics).unwrap();
    let per_query = want["per_query"].as_object().unwrap();
    assert_eq!(got.per_query.len(), per_query.len(), "{run_name}: query count");
    let mut worst = 0f64;
    for (qid, scores) in per_query {
        let ours = got.per_query.get(qid).unwrap_or_else(|| panic!("{run_name}: query {qid} missing"));
        for (i, name) in names.iter().enumerate() {
            let theirs = scores[name].as_f64().unwrap();
            let diff = (ours[i] - theirs).abs();
            worst = worst.max(diff);
            assert!(diff <= TOLERANCE, "{run_name} query {qid} {name}: ours {} trec_eval {theirs}", ours[i]);
        }
    }
    for (i, name) in names.iter().enumerate() {
        let theirs = want["mean"][name].as_f64().unwrap();
        assert!(
            (got.mean[i] - theirs).abs() <= TOLERANCE,
            "{run_name} mean {name}: ours {} trec_eval {theirs}",
            got.mean[i]
        );
    }
    assert_eq!(got.unanswered, strings(&want["unanswered"]), "{run_name}: unanswered");
    assert_eq!(got.unjudged, strings(&want["unjudged"]), "{run_name}: unjudged");
    eprintln!("{run_name}: largest difference from trec_eval {worst:e}");
}

#[test]
fn agrees_with_trec_eval() {
    let expected = expected();
    let runs = expected["runs"].as_object().unwrap();
    assert!(runs.len() >= 3);
    for (run_name, want) in runs {
        let qrels = Qrels::from_path(&fixture(want["qrels"].as_str().unwrap())).unwrap();
        check_run(run_name, &qrels, want);
    }
}

#[test]
fn beir_qrels_read_like_trec_qrels() {
    let trec = Qrels::from_path(&fixture("edge.qrels")).unwrap();
    let beir = Qrels::from_path(&fixture("edge.qrels.tsv")).unwrap();
    assert_eq!(trec, beir);
    check_run("edge.run", &beir, &expected()["runs"]["edge.run"]);
}

#[test]
fn malformed_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.run");
    std::fs::write(&path, "1 Q0 d1 1 0.5 t\n1 Q0 d2 2 high t\n").unwrap();
    let err = Run::from_path(&path).unwrap_err().to_string();
    assert!(err.contains("bad.run") && err.contains("line 2") && err.contains("`high`"), "{err}");
    let path = dir.path().join("bad.qrels");
    std::fs::write(&path, "1 0 d1 1\n1 0 d2\n").unwrap();
    let err = Qrels::from_path(&path).unwrap_err().to_string();
    assert!(err.contains("bad.qrels") && err.contains("line 2"), "{err}");
    let err = Qrels::from_path(&dir.path().join("absent")).unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
}

/// The bundled demo collection: sizes, and its qrels equal the fixture that the Python
/// generator derives from `cranqrel` on its own (gain = 5 - code; -1 and 5 give 0).
#[test]
fn bundled_cranfield() {
    let bundled = Collection::read_beir(&root().join("data/cranfield")).unwrap();
    assert_eq!(bundled.documents.len(), 1400);
    assert_eq!(bundled.queries.len(), 225);
    assert_eq!(bundled.queries[0].id, "1");
    assert_eq!(bundled.qrels, Qrels::from_path(&fixture("cranfield.qrels")).unwrap());
    assert_eq!(bundled.qrels.num_judgments(), 1837);
    let doc = &bundled.documents[0];
    assert_eq!(doc.id, "1");
    assert!(doc.title.starts_with("experimental investigation of the aerodynamics"), "{doc:?}");
}

/// The classic collections' source files (Glasgow's `cranfield/`, `cisi/`, `vaswani_npl/`
/// folders), when present: the directory named by `COLBERT_DATA_DIR`, else `../shared/data`
/// beside the checkout; the tests that need them skip without them.
fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("COLBERT_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    if dir.join("cranfield/cranqrel").is_file() {
        Some(dir)
    } else {
        eprintln!("skipping: no classic collections at {}", dir.display());
        None
    }
}

#[test]
fn readers_match_the_bundled_conversion_and_known_sizes() {
    let Some(data) = shared_data() else { return };
    let cranfield = ClassicCollection::Cranfield.load(&data).unwrap();
    assert_eq!(cranfield, Collection::read_beir(&root().join("data/cranfield")).unwrap());
    let expect =
        [(ClassicCollection::Cisi, 1460, 112, 76, 3114), (ClassicCollection::Npl, 11429, 93, 93, 2083)];
    for (which, docs, queries, judged, judgments) in expect {
        let c = which.load(&data).unwrap();
        assert_eq!(
            (c.documents.len(), c.queries.len(), c.qrels.num_queries(), c.qrels.num_judgments()),
            (docs, queries, judged, judgments),
            "{which:?}"
        );
        let ids: std::collections::HashSet<&str> = c.documents.iter().map(|d| d.id.as_str()).collect();
        let query_ids: std::collections::HashSet<&str> = c.queries.iter().map(|q| q.id.as_str()).collect();
        for (qid, docs) in c.qrels.iter() {
            assert!(query_ids.contains(qid), "{which:?}: judged query {qid} has no text");
            assert!(
                docs.keys().all(|d| ids.contains(d.as_str())),
                "{which:?}: query {qid} judges an unknown document"
            );
        }
        assert!(c.documents.iter().all(|d| !d.text.is_empty()), "{which:?}: empty document");
    }
}
