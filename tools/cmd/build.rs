//! `colbert-index build`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::embeddings::DocEmbeddingsFile;
use engine::index::read_doc_ids;
use engine::{BuildOptions, IndexBuilder};

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
    /// Directory to write the index to. It is built in a temporary sibling directory and renamed
    /// into place only on success.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// External document ids, one per line, in document order (default: 0..n-1).
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
    /// Bits stored per dimension. 16 keeps full f16 embeddings (no compression, exact search).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub nbits: u32,
    /// Replace an existing index at --index (the old one stays until the new one is complete).
    #[arg(long)]
    pub overwrite: bool,
}

/// Documents converted per write.
const CHUNK_TOKENS: u64 = 1 << 16;

/// Runs `build`.
pub fn run(args: &BuildArgs) -> Result<()> {
    if args.nbits != 16 {
        bail!("--nbits {}: only 16 (uncompressed f16) is available in this version", args.nbits);
    }
    if let (Some(collection), Some(model)) = (&args.collection, &args.model) {
        let params = serde_json::json!({ "nbits": args.nbits, "model": model.display().to_string() });
        return super::text::build_from_collection(
            collection,
            model,
            &args.index,
            args.overwrite,
            args.batch_size,
            params,
        );
    }
    let Some(embeddings) = &args.embeddings else {
        bail!("give --embeddings FILE or --collection FILE --model DIR")
    };
    let start = Instant::now();
    let input = DocEmbeddingsFile::open(embeddings)?;
    let ids = match &args.ids {
        Some(path) => Some(read_doc_ids(path, input.n_docs())?),
        None => None,
    };
    let options = BuildOptions {
        overwrite: args.overwrite,
        encoder: None,
        build_params: serde_json::json!({ "nbits": args.nbits, "source": embeddings.display().to_string() }),
    };
    let mut builder = IndexBuilder::create(&args.index, input.dim(), options)
        .with_context(|| format!("cannot create index {}", args.index.display()))?;
    let pb = crate::output::progress(input.n_tokens(), "tokens");
    pb.set_message("indexing");
    let dim = input.dim();
    let mut buf = Vec::new();
    let mut doc = 0usize;
    let mut row = 0u64;
    let lens = input.doclens();
    while doc < lens.len() {
        // Convert a run of whole documents at once.
        let first = doc;
        let mut end_row = row;
        while doc < lens.len() && (doc == first || end_row + lens[doc] <= row + CHUNK_TOKENS) {
            end_row += lens[doc];
            doc += 1;
        }
        input.rows_f32(row..end_row, &mut buf)?;
        let mut offset = 0usize;
        for d in first..doc {
            let n = lens[d] as usize * dim;
            let id = ids.as_ref().map_or_else(|| d.to_string(), |ids| ids[d].clone());
            builder.add(&id, &buf[offset..offset + n])?;
            offset += n;
        }
        pb.set_position(end_row);
        row = end_row;
    }
    let meta = builder.finish()?;
    pb.finish_and_clear();
    eprintln!(
        "indexed {} documents, {} tokens, dim {} into {} in {:.2?}",
        meta.n_docs,
        meta.n_tokens,
        meta.dim,
        args.index.display(),
        start.elapsed()
    );
    Ok(())
}
