//! `colbert-index`: build, search, inspect and verify ColBERT late-interaction indexes.
#![forbid(unsafe_code)]

mod cmd;
mod output;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A fast ColBERT late-interaction search engine.
///
/// Build an index from token embeddings, search it with exact MaxSim, and inspect or verify it.
/// Every command exits 0 on success and non-zero with a one-line error naming the file on bad input.
#[derive(Parser, Debug)]
#[command(name = "colbert-index", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an index from a text collection (--collection + --model) or precomputed token embeddings.
    Build(cmd::build::BuildArgs),
    /// Search an index and print a TREC run (or JSON lines).
    Search(cmd::search::SearchArgs),
    /// Score a first stage's candidates (a TREC run or qid<TAB>docid lines) exactly by MaxSim.
    Rerank(cmd::rerank::RerankArgs),
    /// Add documents to an index as a new segment (encoded against its centroids).
    Add(cmd::update::AddArgs),
    /// Delete documents from an index by external id (never returned again).
    Delete(cmd::update::DeleteArgs),
    /// Merge an index's segments into one and drop its deleted documents.
    Compact(cmd::update::CompactArgs),
    /// Print an index's metadata and sizes.
    Info(cmd::info::InfoArgs),
    /// Check every checksum and offset of an index.
    Verify(cmd::verify::VerifyArgs),
    /// Score a TREC run against relevance judgments (nDCG@10, MRR@10, Recall@100/1000, MAP).
    Eval(cmd::eval::EvalArgs),
    /// Measure latency percentiles, QPS, recall against the exhaustive oracle, size and memory.
    Bench(cmd::bench::BenchArgs),
    /// Serve an index over HTTP: /rerank, /search, /health, /metrics, /openapi.json.
    Serve(cmd::serve::ServeArgs),
    /// Write clustered synthetic token embeddings (and matching queries) for benchmarks.
    Synth(cmd::synth::SynthArgs),
}

fn main() -> ExitCode {
    // For the crash-safety tests: die (SIGKILL) just before the N-th durable step of a write.
    if let Some(n) = std::env::var("COLBERT_TEST_CRASH_AT_STEP").ok().and_then(|v| v.parse().ok()) {
        index_format::fsx::set_crash_point(n);
    }
    // The BM25 sub-index's reader (tantivy) can panic on damaged files; the engine catches the
    // panic and returns an error naming `bm25/`, which is reported below as one line. The
    // default hook would print the panic first: it stays silent for those.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !engine::rerank::bm25::catching_panics() {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Build(a) => cmd::build::run(a),
        Command::Search(a) => cmd::search::run(a),
        Command::Rerank(a) => cmd::rerank::run(a),
        Command::Add(a) => cmd::update::run_add(a),
        Command::Delete(a) => cmd::update::run_delete(a),
        Command::Compact(a) => cmd::update::run_compact(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Synth(a) => cmd::synth::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
