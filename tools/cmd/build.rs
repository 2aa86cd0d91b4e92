//! `colbert-index build`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::codec::CodecConfig;
use engine::embeddings::DocEmbeddingsFile;
use engine::index::{build_from_source, read_doc_ids, stream_documents, BuildStage, SourceBuild};
use engine::{BuildOptions, CompressedParams};

/// Arguments of `build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Token embeddings to index: a safetensors file with `embeddings` (f16 or f32,
    /// [total_tokens, dim]) and `doclens` (i32 or i64, [n_docs]); document i owns the next
    /// doclens[i] rows. The dimension must be a multiple of 8.
    #[arg(
        long,
        value_name = "FILE.safetensors",
        required_unless_present = "collection",
        conflicts_with = "collection"
    )]
    pub embeddings: Option<PathBuf>,
    /// A collection of raw text to encode with --model: ColBERT TSV (`id<TAB>text`) or BEIR
    /// `corpus.jsonl` (`_id`, `title`, `text`; title and text are indexed together). Documents
    /// with empty text are skipped and counted; duplicate ids are an error.
    #[arg(long, value_name = "FILE", requires = "model")]
    pub collection: Option<PathBuf>,
    /// The model to encode --collection with: a Stanford ColBERT (HF_ColBERT) directory, a
    /// PyLate / sentence-transformers ColBERT directory, or a plain BERT/ModernBERT checkpoint.
    /// Recorded in the index, so `search --query` encodes queries the same way.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Texts per model batch when encoding (texts are batched by length to limit padding).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Arithmetic of the model's matrix products (dense layers and attention) when encoding
    /// --collection. `auto` runs them in bf16 (inputs rounded to bf16, f32 accumulation) where
    /// the CPU's features say it pays: AMX tiles where usable (Intel Sapphire Rapids and later),
    /// or AVX-512 BF16 on a CPU without AMX (AMD Zen 4/5, about 1.75x f32); f32 elsewhere. The
    /// choice never depends on timing, so the same flags on the same CPU give the same index.
    /// `bf16` forces it wherever a bf16 kernel exists; `f32` matches PyTorch within 1e-4
    /// everywhere. On all-MiniLM-L6-v2 bf16 embeddings keep a cosine of at least 0.9998 to the
    /// f32 ones. Queries are always encoded in f32. BERT and ModernBERT backbones alike.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// The widest instruction family the encoder's and k-means' products may use: `auto` (the
    /// widest this CPU has, AMX tiles included), `avx512` (never AMX), `avx2` (the general f32
    /// product, no bf16), `portable` (no SIMD kernels). For A/B measurements: other kernels
    /// round differently, so indexes differ in their last bits.
    #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
    pub kernels: KernelsArg,
    /// Directory to write the index to. It is built in a temporary sibling directory and renamed
    /// into place only on success.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// External document ids, one per line, in document order (default: 0..n-1).
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
    /// Bits stored per dimension: 1, 2 or 4 build a compressed index (centroids + quantised
    /// residuals, searched with PLAID centroid pruning); 16 keeps full f16 embeddings (no
    /// compression, exhaustive exact search).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub nbits: u32,
    /// Compressed index: also keep the exact f16 embeddings, so that search can score its final
    /// candidates exactly (adds 2 bytes per dimension per token).
    #[arg(long)]
    pub store_f16: bool,
    /// Compressed index: also keep a centroid-grouped copy of the codes (format v7's `warp_*`
    /// files, about `dim · nbits / 8 + 6` bytes per token), which `search --mode warp` reads in
    /// place: its first search does not build the copy in memory (seconds at 10M tokens), and
    /// WARP mode works on indexes larger than memory. `add` keeps it for new segments;
    /// `compact --warp-layout` adds it to an existing index.
    #[arg(long)]
    pub warp_layout: bool,
    /// Compressed index: number of centroids (default 2^floor(log2(16·sqrt(tokens))); at most
    /// the number of sample tokens).
    #[arg(long, value_name = "N")]
    pub centroids: Option<usize>,
    /// Compressed index: documents whose tokens train k-means and the codec (default
    /// 16·sqrt(120·docs), at most all).
    #[arg(long, value_name = "N")]
    pub sample_docs: Option<usize>,
    /// Compressed index: most memory, in MiB, that the k-means training sample may take (f32
    /// values). Past it, a uniform random subset of the sample documents' tokens is kept (seeded),
    /// and the default number of centroids is capped at one per 8 training tokens, so build
    /// memory stops growing with the collection.
    #[arg(long, default_value_t = engine::index::DEFAULT_TRAIN_MEMORY >> 20, value_name = "MIB")]
    pub train_memory: usize,
    /// Compressed index: k-means iterations.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub kmeans_iters: usize,
    /// Compressed index: seed of the sample and k-means (same input and seed on the same kind of
    /// CPU, same index; the kernels of the products, and so near-ties, depend on the CPU).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compressed index: how residuals are quantised (same bytes per token and decoding cost for
    /// all three; see docs/PLAID.md). `joint`: the dimensions sharing a byte are quantised
    /// together with a trained 256-entry codebook per byte (lowest error); `per-dim`: one
    /// Lloyd–Max quantiser per dimension; `pooled`: one quantile quantiser shared by all
    /// dimensions (Stanford ColBERT's scheme).
    #[arg(long, value_enum, default_value_t = CodecArg::Joint)]
    pub codec: CodecArg,
    /// Also build a BM25 index of the collection's text (title and text for BEIR) in DIR/bm25/,
    /// for `search --bm25` and `search --hybrid`; it also stores the texts that `search --rerank`
    /// needs. Needs --collection.
    #[arg(long, requires = "collection")]
    pub bm25: bool,
    /// Replace an existing index at --index (the old one stays until the new one is complete).
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `build`.
pub fn run(args: &BuildArgs) -> Result<()> {
    if !matches!(args.nbits, 1 | 2 | 4 | 16) {
        bail!("--nbits {}: use 1, 2 or 4 (compressed) or 16 (uncompressed f16)", args.nbits);
    }
    if args.warp_layout && args.nbits == 16 {
        bail!("--warp-layout groups compressed codes: use it with --nbits 1, 2 or 4 (an --nbits 16 index has none)");
    }
    train_memory_bytes(args)?;
    for leftover in index_format::remove_stale_siblings(&args.index) {
        eprintln!("note: removed {}, left behind by an interrupted build", leftover.display());
    }
    if let (Some(collection), Some(model)) = (&args.collection, &args.model) {
        return super::text::build_from_collection(super::text::TextBuild {
            collection,
            model,
            index: &args.index,
            overwrite: args.overwrite,
            batch_size: args.batch_size,
            precision: args.precision.into(),
            kernels: args.kernels.into(),
            compressed: (args.nbits != 16).then(|| compressed_params(args)).transpose()?,
            sample_docs: args.sample_docs,
            train_memory: train_memory_bytes(args)?,
            seed: args.seed,
            build_params: serde_json::json!({ "nbits": args.nbits, "model": model.display().to_string() }),
            bm25: args.bm25,
        });
    }
    let Some(embeddings) = &args.embeddings else {
        bail!("give --embeddings FILE or --collection FILE --model DIR")
    };
    run_embeddings(args, embeddings)
}

/// Builds an index (either kind) from a safetensors embeddings file: for a compressed one,
/// k-means and codec on a sample of documents, then every document streamed through the builder.
fn run_embeddings(args: &BuildArgs, embeddings: &std::path::Path) -> Result<()> {
    let start = Instant::now();
    let input = DocEmbeddingsFile::open(embeddings)?;
    let ids = match &args.ids {
        Some(path) => Some(read_doc_ids(path, input.n_docs())?),
        None => None,
    };
    let job = SourceBuild {
        ids: ids.as_deref(),
        compressed: (args.nbits != 16).then(|| compressed_params(args)).transpose()?,
        sample_docs: args.sample_docs,
        train_memory: train_memory_bytes(args)?,
        options: BuildOptions {
            overwrite: args.overwrite,
            encoder: None,
            build_params: serde_json::json!({ "nbits": args.nbits, "source": embeddings.display().to_string() }),
        },
    };
    let pb = crate::output::progress(input.n_tokens(), "tokens");
    let mut spin = None;
    let built = build_from_source(&args.index, &input, job, &mut |stage| match stage {
        BuildStage::Training { tokens } => {
            spin = Some(crate::output::spinner(format!("training centroids and codec on {tokens} tokens")));
        }
        BuildStage::Writing { done, .. } => {
            if let Some(spin) = spin.take() {
                spin.finish_and_clear();
                pb.set_message("encoding");
            }
            pb.set_position(done);
        }
    })
    .with_context(|| format!("cannot build index {}", args.index.display()))?;
    pb.finish_and_clear();
    let meta = &built.meta;
    let training = match meta.residual {
        None => String::new(),
        Some(_) if built.sample_tokens > built.train_tokens as u64 => format!(
            ", nbits {}, {} centroids (training {:.2?} on {} of the sample's {} tokens, bounded by --train-memory)",
            args.nbits,
            meta.residual.map_or(0, |r| r.n_centroids),
            built.training,
            built.train_tokens,
            built.sample_tokens
        ),
        Some(r) => format!(", nbits {}, {} centroids (training {:.2?})", args.nbits, r.n_centroids, built.training),
    };
    eprintln!(
        "indexed {} documents, {} tokens, dim {}{training} into {} in {:.2?}",
        meta.n_docs,
        meta.n_tokens,
        meta.dim,
        args.index.display(),
        start.elapsed(),
    );
    Ok(())
}

/// Streams every document of `input` to `add` (external id, row-major f32 tokens); `progress`
/// gets the number of token rows done.
pub(crate) fn stream_docs(
    input: &DocEmbeddingsFile,
    ids: Option<&[String]>,
    mut add: impl FnMut(&str, &[f32]) -> engine::Result<()>,
    progress: impl Fn(u64),
) -> Result<()> {
    stream_documents(input, ids, &mut |id, tokens| add(id, tokens), &mut |row| progress(row))
        .with_context(|| input.path().display().to_string())
}

/// `--train-memory` in bytes: at least 1 MiB, and a size this machine can address.
fn train_memory_bytes(args: &BuildArgs) -> Result<usize> {
    match args.train_memory.checked_mul(1 << 20) {
        Some(0) => bail!("--train-memory 0: give a size in MiB, at least 1"),
        Some(bytes) => Ok(bytes),
        None => bail!("--train-memory {}: too large for this machine's address space", args.train_memory),
    }
}

/// The compressed index's parameters selected by the flags.
fn compressed_params(args: &BuildArgs) -> Result<CompressedParams> {
    Ok(CompressedParams {
        n_centroids: args.centroids,
        kmeans_iters: args.kmeans_iters,
        seed: args.seed,
        store_f16: args.store_f16,
        warp_layout: args.warp_layout,
        codec: match args.codec {
            CodecArg::Joint => CodecConfig::joint(args.nbits),
            CodecArg::PerDim => CodecConfig::per_dim(args.nbits),
            CodecArg::Pooled => CodecConfig::pooled(args.nbits),
        },
        kernels: engine::KernelChoice::from(args.kernels).resolve()?,
        ..CompressedParams::new(args.nbits)
    })
}

/// `--codec` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecArg {
    /// Joint 256-codeword codebook per byte position.
    Joint,
    /// One Lloyd–Max quantiser per dimension.
    PerDim,
    /// One quantile quantiser for all dimensions (Stanford ColBERT).
    Pooled,
}

/// `--kernels` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelsArg {
    /// The widest family this CPU runs.
    Auto,
    /// Up to AVX-512 (never the AMX tiles).
    Avx512,
    /// Up to AVX2 + FMA (the general f32 product, no bf16).
    Avx2,
    /// Portable code only.
    Portable,
}

impl From<KernelsArg> for engine::KernelChoice {
    fn from(k: KernelsArg) -> Self {
        match k {
            KernelsArg::Auto => engine::KernelChoice::Auto,
            KernelsArg::Avx512 => engine::KernelChoice::Avx512,
            KernelsArg::Avx2 => engine::KernelChoice::Avx2,
            KernelsArg::Portable => engine::KernelChoice::Portable,
        }
    }
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// bf16 where the CPU's features say it pays (AMX, or AVX-512 BF16 without AMX), else f32.
    Auto,
    /// f32 throughout.
    F32,
    /// bf16 dense layers (f32 where the CPU lacks AVX-512 BF16).
    Bf16,
}

impl From<PrecisionArg> for engine::encoder::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Auto => engine::encoder::Precision::Auto,
            PrecisionArg::F32 => engine::encoder::Precision::F32,
            PrecisionArg::Bf16 => engine::encoder::Precision::Bf16,
        }
    }
}
