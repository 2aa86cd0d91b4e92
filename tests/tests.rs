//! Integration tests of the `colbert-index` workspace: one binary, one module per area.

/// Shared helpers: fixture writers and a CLI runner.
mod common;

/// The CLI end to end: build, search, info, verify, and every bad input it must reject.
mod cli;
/// A seeded sweep of damaged index files through search, info and verify in child processes
/// (memory limit, watchdog): errors, never panics, aborts or hangs.
mod corruption;
/// The encoder against PyTorch fixtures, for each model layout.
mod encoder;
/// Evaluation metrics against pytrec_eval fixtures, and the bundled collections.
mod eval;
/// Exhaustive search against a naive MaxSim computation.
mod exhaustive;
/// The committed golden index of each format version still opens and answers the same.
mod golden;
/// Hardening: corrupt indexes, hostile inputs and absurd sizes end in one-line
/// errors naming the file, never a panic, an abort or a hang.
mod hardening;
/// The benchmark harness: `synth`, `bench` stages and sweep, reproducibility run to run.
mod harness;
/// The listwise LLM reranker: the OpenAI-compatible client against a loopback server, and the
/// real SmolLM2 GGUF end to end.
mod llm;
/// Compressed indexes (as built now; the v2 and v3 layouts from golden copies and transcoding):
/// PLAID against the decompressed oracle, the exact tier, determinism, round trips, corruption
/// and bad inputs.
mod plaid;
/// Same flags, same input, same CPU: byte-identical indexes on an idle and a busy machine.
mod reproducible;
/// Hybrid search and the rerank tail: BM25, RRF, the cross-encoder against PyTorch, the
/// pipeline flags of `search`.
mod rerank;
/// `colbert-index serve`: the HTTP endpoints against the CLI, errors and limits, metrics,
/// deadlines and graceful shutdown on SIGTERM.
mod server;
/// The embedded ranker: updates (add, delete, compact) with stable ids, rerank by id, snapshots,
/// the writer lock, and a writer killed at every durable step.
mod store;
/// The text path of the CLI: collections, text queries, model checks.
mod text;
