//! The text paths of `build` and `search`: encoding a collection or queries with a model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use engine::corpus::{CorpusReader, Record};
use engine::encoder::{Encoder, EncoderOptions};
use engine::{BuildOptions, Index, IndexBuilder};

/// Documents read and encoded per step: bounds memory by the batch, not the collection.
const DOCS_PER_STEP: usize = 1024;

/// Loads a model directory with default options.
pub fn load_encoder(model: &Path, batch_size: usize) -> Result<Encoder> {
    let options = EncoderOptions { batch_size, ..EncoderOptions::default() };
    Encoder::load(model, options).with_context(|| format!("cannot load the model in {}", model.display()))
}

/// Counts the non-blank lines of a file (for the progress bar's length).
fn count_lines(path: &Path) -> Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut n = 0;
    for line in std::io::BufReader::with_capacity(1 << 20, file).split(b'\n') {
        let line = line.with_context(|| format!("{}", path.display()))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            n += 1;
        }
    }
    Ok(n)
}

/// The identity recorded in the index: the encoder's own, plus where the model was loaded from.
fn recorded_identity(encoder: &Encoder, model: &Path) -> serde_json::Value {
    let mut id = encoder.identity();
    let dir = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
    id["model_dir"] = dir.display().to_string().into();
    id
}

/// Encodes every document of `collection` and writes an uncompressed index at `index`.
pub fn build_from_collection(
    collection: &Path,
    model: &Path,
    index: &Path,
    overwrite: bool,
    batch_size: usize,
    mut build_params: serde_json::Value,
) -> Result<()> {
    let start = Instant::now();
    let total = count_lines(collection)?;
    let encoder = load_encoder(model, batch_size)?;
    build_params["collection"] = collection.display().to_string().into();
    let options = BuildOptions { overwrite, encoder: Some(recorded_identity(&encoder, model)), build_params };
    let mut builder = IndexBuilder::create(index, encoder.dim(), options)
        .with_context(|| format!("cannot create index {}", index.display()))?;
    let mut reader = CorpusReader::open(collection)?;
    let pb = crate::output::progress(total, "docs");
    pb.set_message("encoding");
    let mut tokens = 0u64;
    let mut no_tokens = 0usize;
    let mut batch: Vec<Record> = Vec::with_capacity(DOCS_PER_STEP);
    loop {
        batch.clear();
        for r in reader.by_ref().take(DOCS_PER_STEP) {
            batch.push(r?);
        }
        if batch.is_empty() {
            break;
        }
        let texts: Vec<String> = batch.iter().map(Record::full_text).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoded = encoder.encode_documents(&refs)?;
        for (r, emb) in batch.iter().zip(&encoded) {
            if emb.is_empty() {
                no_tokens += 1;
                continue;
            }
            tokens += (emb.len() / encoder.dim()) as u64;
            builder.add(&r.id, emb).with_context(|| format!("{}: line {}", collection.display(), r.line))?;
        }
        pb.inc(batch.len() as u64);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        pb.set_message(format!("encoding, {:.0} tokens/s", tokens as f64 / secs));
    }
    let skipped = reader.skipped_empty();
    let meta =
        builder.finish().with_context(|| format!("{}: no documents with text", collection.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "indexed {} documents ({} tokens, dim {}) from {} in {:.1?} ({:.0} tokens/s){}",
        meta.n_docs,
        meta.n_tokens,
        meta.dim,
        collection.display(),
        start.elapsed(),
        tokens as f64 / start.elapsed().as_secs_f64(),
        if skipped + no_tokens > 0 {
            format!("; skipped {skipped} empty documents and {no_tokens} with no tokens left after filtering")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The model to encode queries with: `--model` if given, else the one recorded in the index.
/// Either way the model must match the index's recorded identity.
pub fn query_encoder(index: &Index, index_dir: &Path, model: Option<&PathBuf>) -> Result<Encoder> {
    let Some(recorded) = &index.meta().encoder else {
        bail!(
            "{}: the index was built from precomputed embeddings, so it cannot encode text queries; \
             pass --query-embeddings",
            index_dir.display()
        );
    };
    let dir = match model {
        Some(m) => m.clone(),
        None => match recorded["model_dir"].as_str() {
            Some(d) => PathBuf::from(d),
            None => {
                bail!("{}: the index does not record its model directory; pass --model", index_dir.display())
            }
        },
    };
    let encoder = load_encoder(&dir, 32)?;
    encoder.check_identity(recorded).with_context(|| {
        format!(
            "the model in {} does not match the one index {} was built with",
            dir.display(),
            index_dir.display()
        )
    })?;
    Ok(encoder)
}
