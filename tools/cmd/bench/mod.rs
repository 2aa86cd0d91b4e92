//! `colbert-index bench`: latency percentiles per search stage, QPS, recall against the
//! exhaustive oracle, index size and peak memory; optionally a sweep of the pruning knobs drawn
//! as a recall-vs-latency Pareto curve.

mod stats;
mod svg;
mod sweep;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::corpus::read_queries;
use engine::embeddings::QueryEmbeddings;
use engine::search::StageTimes;
use engine::{Hit, SearchMode, SearchParams, Segment};
use serde_json::{json, Value};

use self::stats::{clock_cost, decimal, drop_page_cache, mean_recall, peak_rss, percentiles};
use super::knobs::{search_mode, Mode};
use engine::eval::Run;

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Query token embeddings (safetensors with `queries` [n, len, dim]).
    #[arg(long, value_name = "FILE.safetensors", required_unless_present = "queries")]
    pub query_embeddings: Option<PathBuf>,
    /// Query texts (TSV `qid<TAB>text` or BEIR `queries.jsonl`), encoded with the index's model;
    /// encoding is then measured as its own stage.
    #[arg(long, value_name = "FILE", conflicts_with = "query_embeddings")]
    pub queries: Option<PathBuf>,
    /// Model directory to encode text queries with (default: the one recorded in the index).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Documents per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Thread counts to measure, comma separated (each at most 4 times the available cores).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Queries run before measuring, to warm caches.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Also measure with the index dropped from the page cache first (needs root on Linux;
    /// reported as unavailable otherwise).
    #[arg(long)]
    pub cold: bool,
    /// Rounds of the harness-overhead check: every query searched with stage timing on, then
    /// off, this many times (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub overhead_rounds: usize,
    /// The PLAID and WARP knobs of the measured runs.
    #[command(flatten)]
    pub knobs: super::knobs::Knobs,
    /// Compressed index: measure each of these search modes, side by side in one run (e.g.
    /// `plaid,warp`; default: the one --mode names).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODE,..")]
    pub modes: Vec<super::knobs::Mode>,
    /// Also report recall@k against this TREC run of the same queries (query ids: the row
    /// numbers of --query-embeddings from 0, or the ids of --queries), e.g. exact MaxSim from
    /// `colbert-index search` over an uncompressed index of the same embeddings.
    #[arg(long, value_name = "RUN")]
    pub truth: Option<PathBuf>,
    /// The pruning-knob sweep.
    #[command(flatten)]
    pub sweep: sweep::SweepArgs,
    /// Also measure `rerank` (the embedded ranker's second stage): each query scores N
    /// candidates (distinct documents drawn at random, seeded) exactly, at every --threads count;
    /// reports p50/p95 latency. 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rerank: usize,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print Markdown tables (as in docs/BENCHMARKS.md) instead of a plain table.
    #[arg(long)]
    pub markdown: bool,
}

/// The queries of a benchmark, with the time each took to encode when they were text.
struct Queries {
    /// Query ids: row numbers of the embeddings file, or the ids of the text queries.
    ids: Vec<String>,
    tokens: Vec<Vec<f32>>,
    encode: Vec<Duration>,
    source: String,
}

fn load_queries(args: &BenchArgs, index: &Segment) -> Result<Queries> {
    let dim = index.meta().dim;
    if let Some(path) = &args.query_embeddings {
        let q = QueryEmbeddings::open(path)?;
        if q.dim != dim {
            bail!("{}: queries have dimension {}, the index has {dim}", path.display(), q.dim);
        }
        if q.queries.is_empty() {
            bail!("{}: no queries", path.display());
        }
        let ids = (0..q.queries.len()).map(|i| i.to_string()).collect();
        return Ok(Queries {
            ids,
            tokens: q.queries,
            encode: Vec::new(),
            source: path.display().to_string(),
        });
    }
    let path = args.queries.as_ref().context("give --query-embeddings FILE or --queries FILE")?;
    let records = read_queries(path)?;
    if records.is_empty() {
        bail!("{}: no queries", path.display());
    }
    let encoder = super::text::query_encoder(index, &args.index, args.model.as_ref())?;
    // Warm the encoder (first-call allocations) before timing it.
    encoder.encode_queries(&[records[0].text.as_str()])?;
    let mut tokens = Vec::with_capacity(records.len());
    let mut encode = Vec::with_capacity(records.len());
    for r in &records {
        let t = Instant::now();
        let mut e = encoder.encode_queries(&[r.text.as_str()])?;
        encode.push(t.elapsed());
        let e = e.pop().unwrap_or_default();
        if e.is_empty() {
            bail!("{}: query `{}` has no tokens after tokenisation", path.display(), r.id);
        }
        tokens.push(e);
    }
    let ids = records.iter().map(|r| r.id.clone()).collect();
    Ok(Queries { ids, tokens, encode, source: path.display().to_string() })
}

/// One measured pass: every query alone, with stage timing.
struct Pass {
    latency: Vec<Duration>,
    stages: Vec<StageTimes>,
    results: Vec<Vec<Hit>>,
    loop_overhead: Duration,
    batch: Duration,
}

fn measure(index: &Segment, qs: &[Vec<f32>], params: &SearchParams, warmup: usize) -> Result<Pass> {
    for q in qs.iter().cycle().take(warmup) {
        index.search_one(q, params, None)?;
    }
    let mut latency = Vec::with_capacity(qs.len());
    let mut stages = Vec::with_capacity(qs.len());
    let mut results = Vec::with_capacity(qs.len());
    let total = Instant::now();
    for q in qs {
        let mut st = StageTimes::default();
        let t = Instant::now();
        let r = index.search_one(q, params, Some(&mut st))?;
        latency.push(t.elapsed());
        stages.push(st);
        results.push(r);
    }
    let measured: Duration = latency.iter().sum();
    let loop_overhead = total.elapsed().saturating_sub(measured);
    let t = Instant::now();
    index.search(qs, params)?;
    Ok(Pass { latency, stages, results, loop_overhead, batch: t.elapsed() })
}

/// Percentiles of each stage (plus encoding, when measured) and of the total per query.
fn stage_table(pass: &Pass, encode: &[Duration]) -> Value {
    let pick = |f: fn(&StageTimes) -> Duration| percentiles(&pass.stages.iter().map(f).collect::<Vec<_>>());
    let total: Vec<Duration> = pass
        .latency
        .iter()
        .enumerate()
        .map(|(i, l)| *l + encode.get(i).copied().unwrap_or_default())
        .collect();
    let mut out = serde_json::Map::new();
    if !encode.is_empty() {
        out.insert("encode".into(), json!(percentiles(encode)));
    }
    out.insert("candidates".into(), json!(pick(|s| s.candidates)));
    out.insert("pruning".into(), json!(pick(|s| s.pruning)));
    out.insert("maxsim".into(), json!(pick(|s| s.maxsim)));
    out.insert("tail".into(), json!(pick(|s| s.tail)));
    out.insert("search".into(), json!(percentiles(&pass.latency)));
    out.insert("total".into(), json!(percentiles(&total)));
    Value::Object(out)
}

/// The stages in pipeline order, as named in the JSON report.
const STAGES: [&str; 7] = ["encode", "candidates", "pruning", "maxsim", "tail", "search", "total"];

/// The harness's own cost: every query searched with stage timing on and off, plus the clock
/// cost the timing adds per query.
fn overhead(index: &Segment, qs: &[Vec<f32>], params: &SearchParams, rounds: usize) -> Result<Value> {
    let mut on = Duration::ZERO;
    let mut off = Duration::ZERO;
    let mut ratios = Vec::with_capacity(rounds);
    let mut pairs: Vec<(f64, f64)> = Vec::with_capacity(rounds * qs.len());
    for round in 0..rounds {
        // Each query runs timed and untimed back to back (alternating which goes first), so
        // drift in machine load hits both sides alike.
        let mut sums = [Duration::ZERO; 2];
        for (i, q) in qs.iter().enumerate() {
            let order = if (round + i).is_multiple_of(2) { [true, false] } else { [false, true] };
            let mut pair = [Duration::ZERO; 2];
            for timed in order {
                let mut st = StageTimes::default();
                let t = Instant::now();
                index.search_one(q, params, timed.then_some(&mut st))?;
                pair[usize::from(!timed)] = t.elapsed();
            }
            sums[0] += pair[0];
            sums[1] += pair[1];
            pairs.push((pair[0].as_secs_f64(), pair[1].as_secs_f64()));
        }
        on += sums[0];
        off += sums[1];
        ratios.push(sums[0].as_secs_f64() / sums[1].as_secs_f64() - 1.0);
    }
    let mean = ratios.iter().sum::<f64>() / rounds as f64;
    let sd = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (rounds.max(2) - 1) as f64).sqrt();
    let per_query_off = off.as_secs_f64() / (rounds * qs.len()) as f64;
    // Robust to load spikes: the median paired difference over the median untimed latency.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let paired =
        median(pairs.iter().map(|(a, b)| a - b).collect()) / median(pairs.iter().map(|p| p.1).collect());
    // Clock reads per timed query: the lap timer's start and up to four laps, plus the two
    // around each call in the measuring loop.
    let reads = 7.0;
    let clock = clock_cost(1_000_000).as_secs_f64();
    Ok(json!({
        "rounds": rounds,
        "queries_per_round": qs.len(),
        "timed_s": on.as_secs_f64(),
        "untimed_s": off.as_secs_f64(),
        "measured_fraction": on.as_secs_f64() / off.as_secs_f64() - 1.0,
        "round_fraction_sd": sd,
        "paired_median_fraction": paired,
        "clock_read_ns": clock * 1e9,
        "clock_reads_per_query": reads,
        "clock_fraction": reads * clock / per_query_off,
    }))
}

/// `--threads` is at most this many times the available cores.
const MAX_THREADS_PER_CORE: usize = 4;

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts");
    }
    // A pool of 100 000 threads measures nothing but the scheduler (and may exhaust memory).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let most = cores.saturating_mul(MAX_THREADS_PER_CORE);
    if let Some(&t) = args.threads.iter().find(|&&t| t > most) {
        bail!(
            "--threads {t}: at most {MAX_THREADS_PER_CORE} times the {cores} cores available here ({most})"
        );
    }
    if args.k == 0 {
        bail!("-k must be positive");
    }
    let index = Segment::open(&args.index)?;
    let queries = load_queries(args, &index)?;
    let qs = &queries.tokens;
    // The oracle: exact MaxSim over every document (for a compressed index without stored f16
    // embeddings, over its compressed tokens, decoded or table-scored as search scores them).
    let truth = index.search_exhaustive(qs, args.k)?;
    let params = args.knobs.params(args.k);
    let modes = if args.modes.is_empty() { vec![args.knobs.mode] } else { args.modes.clone() };
    let label = |mode: Mode| {
        if !index.is_compressed() {
            "exhaustive"
        } else if params.exhaustive {
            "decompressed"
        } else {
            match mode {
                Mode::Auto => "auto",
                Mode::Plaid => "plaid",
                Mode::Warp => "warp",
            }
        }
    };
    // An uncompressed or exhaustive search is the same in every mode: measured once.
    let modes = if index.is_compressed() && !params.exhaustive { modes } else { modes[..1].to_vec() };
    let truth_run = match &args.truth {
        Some(path) => Some(TruthRun::load(path, &queries.ids, args.k)?),
        None => None,
    };
    // A v6 index's compressed tokens are scored through lookup tables, by search and the
    // oracle alike (docs/PLAID.md, "Scoring without decoding").
    let oracle = if index.reader().has_embeddings() {
        "exact"
    } else if index.reader().token_norms().is_some() {
        "compressed (table-scored)"
    } else {
        "decompressed"
    };

    let mut runs = Vec::new();
    let mut first_pool = None;
    for &threads in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("thread pool")?;
        let mut passes = vec![("warm", false)];
        if args.cold {
            passes.insert(0, ("cold", true));
        }
        // Every mode at this thread count, one after the other.
        let plan: Vec<((&str, bool), Mode)> =
            passes.iter().flat_map(|&p| modes.iter().map(move |&m| (p, m))).collect();
        for ((cache, cold), mode) in plan {
            let params = SearchParams { mode: search_mode(mode), ..params.clone() };
            let cold_note = if cold { drop_page_cache().err() } else { None };
            let warmup = if cold { 0 } else { args.warmup };
            if let Some(view) = index.compressed() {
                if !cold && params.mode_for(view.stores_warp_layout()) == SearchMode::Warp {
                    // Warm: WARP mode's grouped tokens built (or, stored, their pages mapped) first.
                    view.prepare_warp()?;
                }
            }
            let pass = pool.install(|| measure(&index, qs, &params, warmup))?;
            let wall: Duration = pass.latency.iter().sum();
            runs.push(json!({
                "mode": label(mode),
                // The mode that ran (`auto` resolved for this index).
                "runs_as": match params.mode_for(index.compressed().is_some_and(|v| v.stores_warp_layout())) {
                    SearchMode::Warp => "warp",
                    _ => "plaid",
                },
                "oracle": oracle,
                "threads": threads,
                "cache": cache,
                "cache_note": cold_note,
                "queries": qs.len(),
                "k": args.k,
                "stages": stage_table(&pass, &queries.encode),
                "qps_single": qs.len() as f64 / wall.as_secs_f64(),
                "qps_batched": qs.len() as f64 / pass.batch.as_secs_f64(),
                "recall_at_k": mean_recall(&pass.results, &truth),
                "recall_vs_truth": truth_run.as_ref().map(|t| t.recall(&index, &pass.results)),
                "loop_overhead_fraction": pass.loop_overhead.as_secs_f64() / wall.as_secs_f64(),
            }));
        }
        first_pool.get_or_insert(pool);
    }
    let rerank = if args.rerank > 0 { Some(measure_rerank(args, qs)?) } else { None };
    let pool = first_pool.expect("at least one thread count");
    let overhead = if args.overhead_rounds > 0 {
        Some(pool.install(|| overhead(&index, qs, &params, args.overhead_rounds))?)
    } else {
        None
    };
    let sweep = if args.sweep.sweep {
        // `auto` sweeps the knobs of the mode it runs on this index.
        let stored = index.compressed().is_some_and(|v| v.stores_warp_layout());
        let runs = |m: SearchMode| {
            modes
                .iter()
                .any(|&mode| SearchParams { mode: search_mode(mode), ..params.clone() }.mode_for(stored) == m)
        };
        let (plaid, warp) = (runs(SearchMode::Plaid), runs(SearchMode::Warp));
        let points =
            pool.install(|| sweep::run(&index, qs, &truth, &params, &args.sweep, args.warmup, plaid, warp))?;
        let title = format!(
            "{}: recall@{} vs p50 latency, {} thread(s)",
            args.index
                .file_name()
                .map_or_else(|| args.index.display().to_string(), |n| n.to_string_lossy().into()),
            args.k,
            args.threads[0]
        );
        std::fs::write(&args.sweep.svg, svg::pareto_svg(&points, &title, args.k))
            .with_context(|| format!("writing {}", args.sweep.svg.display()))?;
        Some(points)
    } else {
        None
    };
    let meta = index.meta();
    let bytes = index.reader().size_bytes();
    let report = json!({
        "index": args.index.display().to_string(),
        "queries": queries.source,
        "kind": meta.kind,
        "nbits": meta.kind.nbits(),
        "dim": meta.dim,
        "documents": meta.n_docs,
        "tokens": meta.n_tokens,
        "index_bytes": bytes,
        "bytes_per_token": bytes as f64 / meta.n_tokens.max(1) as f64,
        "kernel": engine::maxsim::Kernel::detect().name(),
        "centroid_scores": if params.bf16_centroid_scores && engine::search::bf16_centroid_scores_available() {
            engine::search::bf16_kernel_name()
        } else {
            "f32"
        },
        "params": {
            "ncells": params.ncells,
            "threshold": decimal(params.centroid_score_threshold),
            // The depth this index searches with (scaled from the set one on large indexes).
            "ndocs": params.ndocs_for(meta.n_docs as usize),
            "ndocs_scaled": params.ndocs_for(meta.n_docs as usize) != params.ndocs,
            "rescore": params.rescore,
            "exhaustive": params.exhaustive,
            // WARP mode's knobs as this index uses them (derived from its size by default).
            "nprobe": meta.residual.as_ref().map(|r| params.nprobe_for(meta.n_tokens, r.n_centroids as usize)),
            "warp_rescore": params.warp_rescore_for(meta.n_docs as usize),
        },
        "peak_rss_bytes": peak_rss(),
        "runs": runs,
        "harness_overhead": overhead,
        "rerank": rerank,
        "sweep": sweep.as_ref().map(|p| json!({"svg": args.sweep.svg.display().to_string(), "points": p})),
    });
    // A closed pipe (`bench ... | head`) ends the output quietly (see main.rs).
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else if args.markdown {
        print_markdown(&mut out, &report, sweep.as_deref().unwrap_or_default(), oracle)?;
    } else {
        print_report(&mut out, &report, &args.index, oracle)?;
        if let Some(points) = &sweep {
            writeln!(out)?;
            sweep::print_points(&mut out, points)?;
            writeln!(out, "Pareto curve written to {}", args.sweep.svg.display())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The `--truth` run: each query's best `k` document ids, in the order of the queries.
struct TruthRun {
    top: Vec<Vec<String>>,
}

impl TruthRun {
    /// Reads `path` and takes the best `k` of each of `ids`' queries.
    fn load(path: &std::path::Path, ids: &[String], k: usize) -> Result<Self> {
        let run = Run::from_path(path)?;
        let top = ids
            .iter()
            .map(|q| {
                let ranked = run.ranking(q);
                if ranked.is_empty() {
                    bail!("{}: no results for query {q} (one of the benchmark's queries)", path.display());
                }
                Ok(ranked.iter().take(k).map(|e| e.doc_id.clone()).collect())
            })
            .collect::<Result<_>>()?;
        Ok(TruthRun { top })
    }

    /// Mean recall of `results` (one list per query, in order) against the run.
    fn recall(&self, index: &Segment, results: &[Vec<Hit>]) -> f64 {
        let per_query = results.iter().zip(&self.top).map(|(got, want)| {
            let found = got.iter().filter(|h| want.iter().any(|w| *w == index.doc_id(h.doc))).count();
            found as f64 / want.len().max(1) as f64
        });
        per_query.sum::<f64>() / self.top.len().max(1) as f64
    }
}

/// Latency of reranking `--rerank` random candidates per query, at each thread count.
fn measure_rerank(args: &BenchArgs, qs: &[Vec<f32>]) -> Result<Value> {
    let index = engine::Index::open(&args.index)?;
    let ids = index.live_ids();
    let n = args.rerank.min(ids.len());
    let mut rng = engine::rng::Rng::new(0x9E37_79B9_7F4A_7C15);
    // Each query's candidates: a partial shuffle of all ids.
    let candidates: Vec<Vec<&str>> = qs
        .iter()
        .map(|_| {
            let mut order: Vec<usize> = (0..ids.len()).collect();
            for i in 0..n {
                let j = i + rng.below(ids.len() - i);
                order.swap(i, j);
            }
            order[..n].iter().map(|&i| ids[i].as_str()).collect()
        })
        .collect();
    let dim = index.dim();
    let mut out = Vec::new();
    for &threads in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("thread pool")?;
        let times = pool.install(|| -> Result<Vec<Duration>> {
            let mut times = Vec::with_capacity(qs.len());
            for round in 0..2 {
                for (q, c) in qs.iter().zip(&candidates) {
                    let query = engine::Query::tokens(q, dim)?;
                    let t = std::time::Instant::now();
                    let r = index.rerank(query, c, args.k)?;
                    if round == 1 {
                        times.push(t.elapsed());
                    }
                    debug_assert!(r.missing.is_empty());
                }
            }
            Ok(times)
        })?;
        let p = stats::percentiles(&times);
        out.push(json!({"threads": threads, "candidates": n, "p50_ms": p.p50_ms, "p95_ms": p.p95_ms}));
    }
    Ok(Value::Array(out))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_report(
    out: &mut impl Write,
    report: &Value,
    index: &std::path::Path,
    oracle: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "index {}: {} docs, {} tokens, dim {}, nbits {}, {:.1} bytes/token, kernel {}, centroid scores {}",
        index.display(),
        report["documents"],
        report["tokens"],
        report["dim"],
        report["nbits"],
        f(&report["bytes_per_token"]),
        report["kernel"].as_str().unwrap_or("?"),
        report["centroid_scores"].as_str().unwrap_or("?")
    )?;
    let p = &report["params"];
    writeln!(
        out,
        "params: ncells {}, threshold {}, ndocs {}{}, rescore {}, exhaustive {}",
        p["ncells"],
        p["threshold"],
        p["ndocs"],
        if p["ndocs_scaled"].as_bool() == Some(true) { " (scaled with the index's size)" } else { "" },
        p["rescore"],
        p["exhaustive"]
    )?;
    if report["runs"].as_array().is_some_and(|r| r.iter().any(|r| r["runs_as"] == "warp")) {
        writeln!(out, "warp: nprobe {}, rescore {}", p["nprobe"], p["warp_rescore"])?;
    }
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let with_truth = runs.iter().any(|r| r["recall_vs_truth"].is_number());
    writeln!(
        out,
        "{:<12} {:>7} {:>5} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9}{}",
        "mode",
        "threads",
        "cache",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "QPS",
        "QPS batch",
        "recall@k",
        if with_truth { "  vs --truth" } else { "" }
    )?;
    for r in &runs {
        let t = &r["stages"]["total"];
        let truth = r["recall_vs_truth"].as_f64().map_or(String::new(), |v| format!(" {v:>11.4}"));
        writeln!(
            out,
            "{:<12} {:>7} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>11.1} {:>9.4}{truth}",
            mode_label(r),
            r["threads"].as_u64().unwrap_or(0),
            r["cache"].as_str().unwrap_or(""),
            f(&t["p50_ms"]),
            f(&t["p95_ms"]),
            f(&t["p99_ms"]),
            f(&r["qps_single"]),
            f(&r["qps_batched"]),
            f(&r["recall_at_k"]),
        )?;
        if let Some(note) = r["cache_note"].as_str() {
            writeln!(out, "  cold cache unavailable: {note}")?;
        }
    }
    writeln!(out, "recall@k is measured against exhaustive MaxSim over the {oracle} embeddings")?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<12} {:>7} {:>5} {:<11} {:>9} {:>9} {:>9} {:>9}",
        "mode", "threads", "cache", "stage", "p50 ms", "p95 ms", "p99 ms", "mean ms"
    )?;
    for r in &runs {
        for name in STAGES {
            if let Some(s) = r["stages"].get(name) {
                writeln!(
                    out,
                    "{:<12} {:>7} {:>5} {:<11} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    mode_label(r),
                    r["threads"].as_u64().unwrap_or(0),
                    r["cache"].as_str().unwrap_or(""),
                    name,
                    f(&s["p50_ms"]),
                    f(&s["p95_ms"]),
                    f(&s["p99_ms"]),
                    f(&s["mean_ms"]),
                )?;
            }
        }
    }
    if let Some(o) = report["harness_overhead"].as_object() {
        writeln!(out)?;
        writeln!(out,
            "harness overhead: stage timing on vs off over {} rounds x {} queries: {:+.2}% in total (sd of a round \
             {:.2}%), median paired difference {:+.2}%; clock reads {:.0} x {:.1} ns = {:.4}% of a query",
            o["rounds"],
            o["queries_per_round"],
            100.0 * f(&o["measured_fraction"]),
            100.0 * f(&o["round_fraction_sd"]),
            100.0 * f(&o["paired_median_fraction"]),
            f(&o["clock_reads_per_query"]),
            f(&o["clock_read_ns"]),
            100.0 * f(&o["clock_fraction"]),
        )?;
    }
    if let Some(runs) = report["rerank"].as_array() {
        writeln!(out)?;
        for r in runs {
            writeln!(
                out,
                "rerank {} candidates, {} thread(s): p50 {:.3} ms, p95 {:.3} ms",
                r["candidates"],
                r["threads"],
                f(&r["p50_ms"]),
                f(&r["p95_ms"])
            )?;
        }
    }
    if let Some(rss) = report["peak_rss_bytes"].as_u64() {
        writeln!(out, "peak RSS {:.1} MiB", rss as f64 / (1 << 20) as f64)?;
    }
    Ok(())
}

/// A run's mode as printed: `auto` with the mode it ran, e.g. `auto:warp`.
fn mode_label(r: &Value) -> String {
    let mode = r["mode"].as_str().unwrap_or("");
    if mode == "auto" {
        format!("auto:{}", r["runs_as"].as_str().unwrap_or(""))
    } else {
        mode.to_string()
    }
}

/// The report as Markdown tables: runs, stages, harness overhead and the sweep's frontier.
fn print_markdown(
    out: &mut impl Write,
    report: &Value,
    points: &[sweep::Point],
    oracle: &str,
) -> std::io::Result<()> {
    let p = &report["params"];
    writeln!(out,
        "{} docs, {} tokens, dim {}, nbits {}, {:.1} bytes/token, {:.1} MB; kernel {}, centroid scores {}; ncells {}, threshold {}, \
         ndocs {}; recall@k against exhaustive MaxSim over the {oracle} embeddings; peak RSS {:.0} MB.",
        report["documents"],
        report["tokens"],
        report["dim"],
        report["nbits"],
        f(&report["bytes_per_token"]),
        f(&report["index_bytes"]) / 1e6,
        report["kernel"].as_str().unwrap_or("?"),
        report["centroid_scores"].as_str().unwrap_or("?"),
        p["ncells"],
        p["threshold"],
        p["ndocs"],
        f(&report["peak_rss_bytes"]) / 1e6,
    )?;
    writeln!(out)?;
    writeln!(out, "| mode | threads | cache | p50 ms | p95 ms | p99 ms | QPS | QPS batched | recall@k |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    for r in &runs {
        let t = &r["stages"]["total"];
        writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.4} |",
            mode_label(r),
            r["threads"],
            r["cache"].as_str().unwrap_or(""),
            f(&t["p50_ms"]),
            f(&t["p95_ms"]),
            f(&t["p99_ms"]),
            f(&r["qps_single"]),
            f(&r["qps_batched"]),
            f(&r["recall_at_k"]),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "| threads | cache | stage | p50 ms | p95 ms | p99 ms | mean ms |")?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for r in &runs {
        for name in STAGES {
            if let Some(s) = r["stages"].get(name) {
                writeln!(
                    out,
                    "| {} | {} | {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    r["threads"],
                    r["cache"].as_str().unwrap_or(""),
                    f(&s["p50_ms"]),
                    f(&s["p95_ms"]),
                    f(&s["p99_ms"]),
                    f(&s["mean_ms"]),
                )?;
            }
        }
    }
    if let Some(o) = report["harness_overhead"].as_object() {
        writeln!(out)?;
        writeln!(out,
            "Harness overhead: stage timing on vs off, {} rounds × {} queries, each query timed and untimed back to \
             back: {:+.2}% in total (sd of one round {:.2}%), median paired difference {:+.2}% of the median query; \
             the clock reads it adds ({:.0} × {:.1} ns) are {:.4}% of a query.",
            o["rounds"],
            o["queries_per_round"],
            100.0 * f(&o["measured_fraction"]),
            100.0 * f(&o["round_fraction_sd"]),
            100.0 * f(&o["paired_median_fraction"]),
            f(&o["clock_reads_per_query"]),
            f(&o["clock_read_ns"]),
            100.0 * f(&o["clock_fraction"]),
        )?;
    }
    if !points.is_empty() {
        let mut front: Vec<&sweep::Point> = points.iter().filter(|p| p.pareto).collect();
        front.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
        writeln!(out)?;
        writeln!(out, "Sweep: {} settings; the Pareto frontier:", points.len())?;
        writeln!(out)?;
        writeln!(
            out,
            "| mode | ncells | threshold | ndocs | nprobe | rescore | p50 ms | p95 ms | recall@k |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
        for p in front {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.4} |",
                p.mode,
                sweep::cell(p.ncells),
                sweep::cell(p.threshold),
                sweep::cell(p.ndocs),
                sweep::cell(p.nprobe),
                sweep::cell(p.warp_rescore),
                p.p50_ms,
                p.p95_ms,
                p.recall
            )?;
        }
    }
    Ok(())
}
