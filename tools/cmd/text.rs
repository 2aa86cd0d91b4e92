//! The text paths of `build` and `search`: encoding a collection or queries with a model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use engine::corpus::{CorpusReader, Record};
use engine::encoder::{Encoder, EncoderOptions, KernelChoice, Precision};
use engine::index::{sample_docs, CompressedBuilder, CompressedParams, TrainingSample};
use engine::rerank::bm25::{Bm25Builder, BM25_DIR};
use engine::{BuildOptions, IndexBuilder, Segment};
use half::f16;

/// Documents read and encoded per step: bounds memory by the batch, not the collection.
const DOCS_PER_STEP: usize = 1024;

/// Loads a model directory with default options, its dense layers in `precision` on `kernels`.
pub fn load_encoder(
    model: &Path,
    batch_size: usize,
    precision: Precision,
    kernels: KernelChoice,
) -> Result<Encoder> {
    let options = EncoderOptions { batch_size, precision, kernels, ..EncoderOptions::default() };
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

/// What to build from a collection.
#[derive(Debug)]
pub struct TextBuild<'a> {
    /// The collection file.
    pub collection: &'a Path,
    /// The model directory.
    pub model: &'a Path,
    /// Destination index directory.
    pub index: &'a Path,
    /// Replace an existing index.
    pub overwrite: bool,
    /// Texts per model batch.
    pub batch_size: usize,
    /// Arithmetic of the document encoder's dense layers.
    pub precision: Precision,
    /// The widest kernel family the encoder may use.
    pub kernels: KernelChoice,
    /// `None` for the uncompressed kind, else the compressed index's parameters.
    pub compressed: Option<CompressedParams>,
    /// Documents encoded to train centroids and codec (compressed only; default by size).
    pub sample_docs: Option<usize>,
    /// Most bytes of f32 values the k-means training sample may hold.
    pub train_memory: usize,
    /// Seed of the sample.
    pub seed: u64,
    /// Build parameters recorded in the metadata.
    pub build_params: serde_json::Value,
    /// Also build a BM25 index of the same texts in `INDEX/bm25/`.
    pub bm25: bool,
}

/// The builder of either index kind.
enum Sink {
    Plain(Box<IndexBuilder>),
    Compressed(Box<CompressedBuilder>),
}

impl Sink {
    fn add(&mut self, id: &str, tokens: &[f32]) -> engine::Result<()> {
        match self {
            Sink::Plain(b) => b.add(id, tokens),
            Sink::Compressed(b) => b.add(id, tokens),
        }
    }

    fn temp_dir(&self) -> &Path {
        match self {
            Sink::Plain(b) => b.temp_dir(),
            Sink::Compressed(b) => b.temp_dir(),
        }
    }

    fn finish(self) -> engine::Result<index_format::IndexMeta> {
        match self {
            Sink::Plain(b) => b.finish(),
            Sink::Compressed(b) => b.finish(),
        }
    }
}

/// Reads the collection in steps of [`DOCS_PER_STEP`] records, encodes the records `keep`
/// accepts (by ordinal), and hands each encoded document to `f`.
fn encode_pass(
    collection: &Path,
    encoder: &Encoder,
    mut keep: impl FnMut(usize) -> bool,
    mut f: impl FnMut(usize, &Record, Option<&[f32]>) -> Result<()>,
) -> Result<usize> {
    let mut reader = CorpusReader::open(collection)?;
    let mut ordinal = 0usize;
    let mut batch: Vec<Record> = Vec::with_capacity(DOCS_PER_STEP);
    loop {
        batch.clear();
        for r in reader.by_ref().take(DOCS_PER_STEP) {
            batch.push(r?);
        }
        if batch.is_empty() {
            break;
        }
        let first = ordinal;
        ordinal += batch.len();
        let wanted: Vec<bool> = (first..ordinal).map(&mut keep).collect();
        let texts: Vec<String> =
            batch.iter().zip(&wanted).filter(|(_, &w)| w).map(|(r, _)| r.full_text()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut encoded = encoder.encode_documents(&refs)?.into_iter();
        for (i, (r, &w)) in batch.iter().zip(&wanted).enumerate() {
            let emb = if w { encoded.next() } else { None };
            f(first + i, r, emb.as_deref())?;
        }
    }
    Ok(reader.skipped_empty())
}

/// Encoded training-sample documents kept (as f16) for the main pass, so that no document is
/// encoded twice. They are written to a file in the index's temporary directory as the sample
/// pass encodes them and read back in order by the main pass (both visit documents in collection
/// order): they take disk (2 bytes per value), not memory, and the file is removed before the
/// index is published (an interrupted build's directory is removed whole).
struct SampleSpill {
    path: PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
    reader: Option<std::io::BufReader<std::fs::File>>,
    /// Ordinal and number of values of each document written, in order.
    docs: std::collections::VecDeque<(usize, usize)>,
    bytes: Vec<u8>,
}

/// Name of the spill file inside the index's temporary directory.
const SPILL_FILE: &str = "sample-embeddings.f16.tmp";

impl SampleSpill {
    fn create(dir: &Path) -> Result<Self> {
        let path = dir.join(SPILL_FILE);
        let file =
            std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(SampleSpill {
            writer: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            reader: None,
            path,
            docs: Default::default(),
            bytes: Vec::new(),
        })
    }

    fn keep(&mut self, ordinal: usize, emb: &[f32]) -> Result<()> {
        use std::io::Write;
        let writer = self.writer.as_mut().expect("spill written before it is read");
        self.bytes.clear();
        self.bytes.extend(emb.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()));
        writer.write_all(&self.bytes).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.docs.push_back((ordinal, emb.len()));
        Ok(())
    }

    /// The ordinals written, for the main pass to skip encoding.
    fn ordinals(&self) -> std::collections::HashSet<usize> {
        self.docs.iter().map(|&(i, _)| i).collect()
    }

    /// Ends writing; reading starts at the first document.
    fn rewind(&mut self) -> Result<()> {
        use std::io::Write;
        if let Some(mut w) = self.writer.take() {
            w.flush().with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        self.reader = Some(std::io::BufReader::with_capacity(1 << 20, file));
        Ok(())
    }

    /// The embeddings of document `ordinal`, which must be the next one written.
    fn take(&mut self, ordinal: usize) -> Result<Vec<f32>> {
        use std::io::Read;
        let (next, n) = self.docs.pop_front().unwrap_or((usize::MAX, 0));
        if next != ordinal {
            bail!("{}: internal error: document {ordinal} read back out of order", self.path.display());
        }
        let reader = self.reader.as_mut().expect("spill rewound before it is read");
        self.bytes.resize(n * 2, 0);
        reader.read_exact(&mut self.bytes).with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(self.bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect())
    }

    fn remove(self) -> Result<()> {
        drop((self.writer, self.reader));
        std::fs::remove_file(&self.path).with_context(|| format!("cannot remove {}", self.path.display()))
    }
}

/// Encodes every document of a collection and writes an index (either kind). Token embeddings
/// are rounded to f16 before indexing (what the index stores), whichever pass encoded them.
pub fn build_from_collection(job: TextBuild<'_>) -> Result<()> {
    let start = Instant::now();
    let total = count_lines(job.collection)?;
    let encoder = load_encoder(job.model, job.batch_size, job.precision, job.kernels)?;
    let mut build_params = job.build_params;
    build_params["collection"] = job.collection.display().to_string().into();
    build_params["bm25"] = job.bm25.into();
    let options = BuildOptions {
        overwrite: job.overwrite,
        encoder: Some(encoder.recorded_identity(job.model)),
        build_params,
    };
    let dim = encoder.dim();
    let mut spill: Option<SampleSpill> = None;
    let mut trained = String::new();
    let create = |what: &Path| format!("cannot create index {}", what.display());
    let mut sink = match job.compressed {
        None => Sink::Plain(Box::new(
            IndexBuilder::create(job.index, dim, options).with_context(|| create(job.index))?,
        )),
        Some(params) => {
            let mut builder = CompressedBuilder::create(job.index, dim, params, options)
                .with_context(|| create(job.index))?;
            let kept = spill.insert(SampleSpill::create(builder.temp_dir())?);
            // Train centroids and codec on a seeded sample of documents, encoded first.
            let picked: std::collections::HashSet<usize> =
                sample_docs(total as usize, job.sample_docs, job.seed).into_iter().collect();
            let pb = crate::output::progress(picked.len() as u64, "docs");
            pb.set_message("encoding the training sample");
            let mut sample = TrainingSample::with_memory(dim, job.train_memory, job.seed);
            let mut sampled = 0usize;
            let mut rounded: Vec<f32> = Vec::new();
            encode_pass(
                job.collection,
                &encoder,
                |i| picked.contains(&i),
                |i, r, emb| {
                    let Some(emb) = emb else { return Ok(()) };
                    rounded.clear();
                    rounded.extend(emb.iter().map(|&v| f16::from_f32(v).to_f32()));
                    // A model that yields NaN (or values f16 cannot hold) is stopped here, naming
                    // the document, before it trains centroids on them.
                    engine::index::check_values(&r.id, emb, dim).with_context(|| {
                        format!("{}: line {}: the model's output", job.collection.display(), r.line)
                    })?;
                    sample.add(&rounded);
                    sampled += usize::from(!emb.is_empty());
                    kept.keep(i, emb)?;
                    pb.inc(1);
                    Ok(())
                },
            )?;
            pb.finish_and_clear();
            if sample.is_empty() {
                bail!("{}: no document with text to train on", job.collection.display());
            }
            let est_tokens = sample.seen() * total / sampled.max(1) as u64;
            let (train_tokens, seen) = (sample.len(), sample.seen());
            let training = Instant::now();
            let spin =
                crate::output::spinner(format!("training centroids and codec on {train_tokens} tokens"));
            builder.train_sample(sample, est_tokens.max(1)).context("training centroids and codec")?;
            spin.finish_and_clear();
            // Reported with the summary line, so that a failed build still prints one line.
            trained = format!(
                "; {} centroids trained on {train_tokens} tokens{} in {:.1?}",
                builder.n_centroids().unwrap_or(0),
                if seen > train_tokens as u64 {
                    format!(" (a uniform subset of the sample's {seen}, bounded by --train-memory)")
                } else {
                    String::new()
                },
                training.elapsed()
            );
            kept.rewind()?;
            Sink::Compressed(Box::new(builder))
        }
    };
    // The BM25 index is written inside the index's temporary directory, so it is published (or
    // discarded) with the rest.
    let mut bm25 = match job.bm25 {
        true => Some(Bm25Builder::create(&sink.temp_dir().join(BM25_DIR))?),
        false => None,
    };
    let pb = crate::output::progress(total, "docs");
    pb.set_message("encoding");
    let mut tokens = 0u64;
    let mut no_tokens = 0usize;
    let collection = job.collection;
    let cached = spill.as_ref().map(SampleSpill::ordinals).unwrap_or_default();
    let skipped = encode_pass(
        collection,
        &encoder,
        |i| !cached.contains(&i),
        |i, r, emb| {
            let emb: Vec<f32> = match emb {
                Some(e) => {
                    // Checked before rounding, so the error shows the value the model produced.
                    engine::index::check_values(&r.id, e, dim).with_context(|| {
                        format!("{}: line {}: the model's output", collection.display(), r.line)
                    })?;
                    e.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
                }
                None => spill.as_mut().expect("only spilled documents are not encoded").take(i)?,
            };
            if emb.is_empty() {
                no_tokens += 1;
            } else {
                tokens += (emb.len() / dim) as u64;
                sink.add(&r.id, &emb)
                    .with_context(|| format!("{}: line {}", collection.display(), r.line))?;
            }
            if let Some(b) = bm25.as_mut() {
                b.add(&r.id, &r.full_text())?;
            }
            pb.inc(1);
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!("encoding, {:.0} tokens/s", tokens as f64 / secs));
            Ok(())
        },
    )?;
    if let Some(spill) = spill {
        spill.remove()?;
    }
    let bm25_docs = bm25.map(Bm25Builder::finish).transpose()?;
    let meta = sink.finish().with_context(|| format!("{}: no documents with text", collection.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "indexed {} documents ({} tokens, dim {}, nbits {}) from {} in {:.1?} ({:.0} tokens/s, {}){trained}{}",
        meta.n_docs,
        meta.n_tokens,
        meta.dim,
        meta.kind.nbits(),
        collection.display(),
        start.elapsed(),
        tokens as f64 / start.elapsed().as_secs_f64(),
        encoder.kernel(),
        if skipped + no_tokens > 0 {
            format!("; skipped {skipped} empty documents and {no_tokens} with no tokens left after filtering")
        } else {
            String::new()
        }
    );
    if let Some(n) = bm25_docs {
        eprintln!("BM25 index of {n} documents in {}", job.index.join(BM25_DIR).display());
    }
    Ok(())
}

/// The model to encode queries with: `--model` if given, else the one recorded in the index.
/// Either way the model must match the index's recorded identity.
pub fn query_encoder(index: &Segment, index_dir: &Path, model: Option<&PathBuf>) -> Result<Encoder> {
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
    let encoder = load_encoder(&dir, 32, Precision::F32, KernelChoice::Auto)?;
    encoder.check_identity(recorded).with_context(|| {
        format!(
            "the model in {} does not match the one index {} was built with",
            dir.display(),
            index_dir.display()
        )
    })?;
    Ok(encoder)
}
