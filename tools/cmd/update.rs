//! `colbert-index add`, `delete` and `compact`: change an index in place.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::corpus::CorpusReader;
use engine::embeddings::DocEmbeddingsFile;
use engine::index::read_doc_ids;
use engine::store::AddOptions;
use engine::Writer;

/// Arguments of `add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The index to add to.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Token embeddings of the new documents: a safetensors file with `embeddings` and `doclens`,
    /// as `build --embeddings` reads (with --ids).
    #[arg(long, value_name = "FILE.safetensors", conflicts_with = "collection", requires = "ids")]
    pub embeddings: Option<PathBuf>,
    /// External ids of the new documents, one per line, in document order (with --embeddings).
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
    /// New documents as text (ColBERT TSV or BEIR corpus.jsonl), encoded with the index's model.
    #[arg(long, value_name = "FILE")]
    pub collection: Option<PathBuf>,
    /// Documents whose id is already in the index replace the old ones (deleted in the same
    /// step); without it such an id is an error and nothing is added.
    #[arg(long)]
    pub replace: bool,
    /// Texts per model batch when encoding --collection.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// Arguments of `delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The index to delete from.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// External ids to delete, one per line. Ids not in the index are reported, not an error.
    #[arg(long, value_name = "FILE")]
    pub ids: PathBuf,
}

/// Arguments of `compact`.
#[derive(Args, Debug)]
pub struct CompactArgs {
    /// The index to compact.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Compressed index: write the centroid-grouped layout WARP search mode reads in place
    /// (format v7; see `build --warp-layout`) into the compacted index. Default: keep what the
    /// index has.
    #[arg(long, conflicts_with = "no_warp_layout")]
    pub warp_layout: bool,
    /// Compressed index: drop the centroid-grouped layout (WARP mode then builds it in memory
    /// at its first search, as for indexes without it).
    #[arg(long)]
    pub no_warp_layout: bool,
}

/// Runs `add`.
pub fn run_add(args: &AddArgs) -> Result<()> {
    let start = Instant::now();
    let mut writer = Writer::open(&args.index, "add")?;
    let dim = writer.index().dim();
    let encoder = match &args.collection {
        Some(_) => Some(
            writer
                .index()
                .encoder()
                .with_context(|| format!("cannot encode text for {}", args.index.display()))?,
        ),
        None => None,
    };
    let mut adding = writer.begin_add(AddOptions { replace: args.replace })?;
    if let Some(path) = &args.embeddings {
        let input = DocEmbeddingsFile::open(path)?;
        if input.dim() != dim {
            bail!("{}: embeddings have dimension {}, the index has {dim}", path.display(), input.dim());
        }
        let ids_path = args.ids.as_ref().context("--embeddings needs --ids")?;
        let ids = read_doc_ids(ids_path, input.n_docs())?;
        let pb = crate::output::progress(input.n_tokens(), "tokens");
        pb.set_message("encoding");
        super::build::stream_docs(&input, Some(&ids), |id, t| adding.add(id, t), |row| pb.set_position(row))?;
        pb.finish_and_clear();
    } else if let (Some(path), Some(encoder)) = (&args.collection, encoder) {
        let mut reader = CorpusReader::open(path)?;
        let pb = crate::output::spinner("encoding documents".into());
        let mut batch: Vec<(String, String)> = Vec::new();
        let flush = |batch: &mut Vec<(String, String)>, adding: &mut engine::store::Adding<'_>| {
            let texts: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
            let encoded = encoder.encode_documents(&texts)?;
            for ((id, _), tokens) in batch.iter().zip(encoded) {
                if tokens.is_empty() {
                    continue;
                }
                adding.add(id, &tokens)?;
            }
            batch.clear();
            anyhow::Ok(())
        };
        for r in reader.by_ref() {
            let r = r?;
            batch.push((r.id.clone(), r.full_text()));
            if batch.len() >= args.batch_size.max(1) * rayon::current_num_threads() {
                flush(&mut batch, &mut adding)?;
                pb.set_message(format!("encoding documents ({} so far)", adding.len()));
            }
        }
        flush(&mut batch, &mut adding)?;
        pb.finish_and_clear();
    } else {
        bail!("give the new documents: --embeddings FILE --ids FILE, or --collection FILE");
    }
    if adding.is_empty() {
        bail!("no documents to add");
    }
    let report = adding.commit()?;
    eprintln!(
        "added {} documents ({} tokens) to {} as segment {}{} in {:.2?}; {} live documents in {} segments",
        report.added,
        report.tokens,
        args.index.display(),
        report.segment,
        if report.replaced.is_empty() {
            String::new()
        } else {
            format!(", replacing {}", report.replaced.len())
        },
        start.elapsed(),
        writer.index().n_docs(),
        writer.index().manifest().segments.len()
    );
    Ok(())
}

/// Runs `delete`.
pub fn run_delete(args: &DeleteArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.ids).with_context(|| format!("{}", args.ids.display()))?;
    let ids: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if ids.is_empty() {
        bail!("{}: no ids", args.ids.display());
    }
    let mut writer = Writer::open(&args.index, "delete")?;
    let report = writer.delete(&ids)?;
    eprintln!(
        "deleted {} documents from {}; {} live documents",
        report.deleted.len(),
        args.index.display(),
        writer.index().n_docs()
    );
    if !report.missing.is_empty() {
        let shown: Vec<&str> = report.missing.iter().take(20).map(String::as_str).collect();
        eprintln!(
            "note: {} ids were not in the index: {}{}",
            report.missing.len(),
            shown.join(", "),
            if report.missing.len() > 20 { " ..." } else { "" }
        );
    }
    Ok(())
}

/// Runs `compact`.
pub fn run_compact(args: &CompactArgs) -> Result<()> {
    let start = Instant::now();
    let writer = Writer::open(&args.index, "compact")?;
    let spin = crate::output::spinner(format!("compacting {}", args.index.display()));
    let warp_layout = match (args.warp_layout, args.no_warp_layout) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let done = writer.compact_with(engine::store::CompactOptions { warp_layout })?;
    spin.finish_and_clear();
    eprintln!(
        "compacted {} segments into one: {} documents kept, {} deleted documents dropped, in {:.2?}",
        done.segments,
        done.docs,
        done.dropped,
        start.elapsed()
    );
    if done.dropped_bm25 {
        eprintln!(
            "note: the BM25 sub-index was not carried over; rebuild with --bm25 for --bm25/--hybrid search"
        );
    }
    Ok(())
}
