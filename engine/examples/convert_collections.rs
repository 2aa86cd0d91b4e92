//! Converts the classic collections (Cranfield, CISI, NPL) into BEIR-style folders.
//!
//! ```text
//! cargo run -p engine --example convert_collections -- DATA_DIR OUT_DIR [cranfield|cisi|npl ...]
//! ```
//!
//! `DATA_DIR` holds the `cranfield/`, `cisi/` and `vaswani_npl/` source folders; each named
//! collection (all by default) is written to `OUT_DIR/<name>/` as `corpus.jsonl`,
//! `queries.jsonl` and `qrels.tsv`. The bundled `data/cranfield/` was made with
//! `OUT_DIR=data cranfield` from the Glasgow IR group's source files.

use std::path::PathBuf;
use std::process::ExitCode;

use engine::collections::ClassicCollection;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: convert_collections DATA_DIR OUT_DIR [cranfield|cisi|npl ...]");
        return ExitCode::FAILURE;
    }
    let (data, out) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let mut chosen = Vec::new();
    for name in &args[2..] {
        match ClassicCollection::ALL.iter().find(|c| c.name() == name) {
            Some(&c) => chosen.push(c),
            None => {
                eprintln!("unknown collection `{name}`: expected cranfield, cisi or npl");
                return ExitCode::FAILURE;
            }
        }
    }
    if chosen.is_empty() {
        chosen = ClassicCollection::ALL.to_vec();
    }
    for which in chosen {
        let dir = out.join(which.name());
        let result = which.load(&data).and_then(|c| c.write_beir(&dir).map(|()| c));
        match result {
            Ok(c) => println!(
                "{}: {} documents, {} queries, {} judgments -> {}",
                which.name(),
                c.documents.len(),
                c.queries.len(),
                c.qrels.num_judgments(),
                dir.display()
            ),
            Err(e) => {
                eprintln!("{}: {e}", which.name());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
