//! `colbert-index synth`: clustered synthetic token embeddings (and matching queries) in the
//! embeddings format, streamed to disk so corpora larger than memory can be produced.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::embeddings::writer::{write_query_embeddings, DocEmbeddingsWriter};
use engine::synth::{SynthCorpus, SynthSpec, TokensPerDoc};
use rayon::prelude::*;

/// Arguments of `synth`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Where to write the document embeddings (`embeddings` f16, `doclens` i64), for
    /// `build --embeddings`.
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: PathBuf,
    /// Also write --n-queries queries here (for `search`/`bench --query-embeddings`).
    #[arg(long, value_name = "FILE.safetensors")]
    pub queries_out: Option<PathBuf>,
    /// Number of documents.
    #[arg(long, default_value_t = 10_000)]
    pub docs: usize,
    /// Tokens per document (the fewest, with --max-tokens-per-doc).
    #[arg(long, default_value_t = 32)]
    pub tokens_per_doc: usize,
    /// Draw each document's length uniformly from --tokens-per-doc..=this.
    #[arg(long, value_name = "N")]
    pub max_tokens_per_doc: Option<usize>,
    /// Embedding dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Number of cluster centres (0: i.i.d. random unit vectors, no structure).
    #[arg(long, default_value_t = 2_000)]
    pub clusters: usize,
    /// Expected norm of the noise added to a centre before renormalising (0.35: cosine about
    /// 0.94 between a token and its centre).
    #[arg(long, default_value_t = 0.35)]
    pub noise: f32,
    /// Distinct clusters a document draws its tokens from (0: any cluster per token).
    #[arg(long, default_value_t = 8)]
    pub clusters_per_doc: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of queries (perturbed tokens of a random document each).
    #[arg(long, default_value_t = 100)]
    pub n_queries: usize,
    /// Tokens per query.
    #[arg(long, default_value_t = 32)]
    pub query_len: usize,
    /// Expected norm of the noise added to each query token.
    #[arg(long, default_value_t = 0.3)]
    pub query_noise: f32,
    /// Seed of the queries (with the corpus seed).
    #[arg(long, default_value_t = 1)]
    pub query_seed: u64,
    /// Replace existing output files.
    #[arg(long)]
    pub overwrite: bool,
}

/// Whether `n` values of `T` can be allocated (the size fits the address space and the
/// allocator grants it).
fn fits_in_memory<T>(n: usize) -> bool {
    Vec::<T>::new().try_reserve_exact(n).is_ok()
}

/// Documents generated per parallel work unit.
const DOCS_PER_PIECE: usize = 256;

/// Runs `synth`.
pub fn run(args: &SynthArgs) -> Result<()> {
    for path in std::iter::once(&args.out).chain(&args.queries_out) {
        if path.exists() && !args.overwrite {
            bail!("{}: already exists (pass --overwrite to replace it)", path.display());
        }
    }
    if args.docs == 0 {
        bail!("--docs must be positive");
    }
    if args.queries_out.is_some() && (args.n_queries == 0 || args.query_len == 0) {
        bail!("--n-queries and --query-len must be positive");
    }
    let tokens_per_doc = match args.max_tokens_per_doc {
        None => TokensPerDoc::Fixed(args.tokens_per_doc),
        Some(max) => TokensPerDoc::Range { min: args.tokens_per_doc, max },
    };
    let spec = SynthSpec {
        n_docs: args.docs,
        tokens_per_doc,
        dim: args.dim,
        n_clusters: args.clusters,
        noise: args.noise,
        clusters_per_doc: args.clusters_per_doc,
        seed: args.seed,
    };
    let corpus = SynthCorpus::new(spec)?;
    // Sizes are checked before anything is allocated: an absurd size is an error, not an abort.
    let query_values = args.n_queries.checked_mul(args.query_len).and_then(|n| n.checked_mul(args.dim));
    if args.queries_out.is_some() && query_values.is_none_or(|n| !fits_in_memory::<f32>(n)) {
        bail!(
            "--n-queries {} × --query-len {} × --dim {}: the queries do not fit in memory",
            args.n_queries,
            args.query_len,
            args.dim
        );
    }
    let mut doclens: Vec<u32> = Vec::new();
    if doclens.try_reserve_exact(args.docs).is_err() {
        bail!("--docs {}: the document lengths alone do not fit in memory", args.docs);
    }
    // (SynthCorpus::new bounds a document's length far below 2^32.)
    doclens.extend((0..args.docs).map(|d| corpus.doc_len(d) as u32));
    let total: u64 = doclens.iter().map(|&l| l as u64).sum();
    let start = Instant::now();
    let mut writer = DocEmbeddingsWriter::create(&args.out, args.dim, &doclens)?;
    let pb = crate::output::progress(total, "tokens");
    pb.set_message("generating");
    // Pieces are generated in parallel a batch at a time and written in order; only one batch
    // is held in memory.
    let batch = DOCS_PER_PIECE * rayon::current_num_threads().max(1) * 2;
    for first in (0..args.docs).step_by(batch) {
        let end = (first + batch).min(args.docs);
        let pieces: Vec<_> = (first..end)
            .step_by(DOCS_PER_PIECE)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|s| corpus.chunk(s..(s + DOCS_PER_PIECE).min(end)))
            .collect();
        for piece in pieces {
            writer.write_tokens(&piece.tokens).with_context(|| format!("writing {}", args.out.display()))?;
            pb.inc(piece.doclens.iter().map(|&l| l as u64).sum());
        }
    }
    writer.finish()?;
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {}: {} docs, {total} tokens x {} dims ({:.1} GB f16) in {secs:.1} s",
        args.out.display(),
        args.docs,
        args.dim,
        (total * args.dim as u64 * 2) as f64 / 1e9
    );
    if let Some(path) = &args.queries_out {
        let q = corpus.queries(args.n_queries, args.query_len, args.query_noise, args.query_seed);
        write_query_embeddings(path, args.query_len, args.dim, &q)?;
        eprintln!("wrote {}: {} queries x {} tokens", path.display(), args.n_queries, args.query_len);
    }
    Ok(())
}
