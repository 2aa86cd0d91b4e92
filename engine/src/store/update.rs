//! Changing an index in place: adding documents (a new segment), deleting them (tombstones in
//! the manifest) and compacting (one new base segment, tombstones dropped).
//!
//! Every change is published by one atomic step (a manifest renamed into place, or the index
//! directory exchanged with its compacted copy), after every file it names is synced: a writer
//! killed at any point leaves the index as it was before the change or as it is after it.

use std::path::{Path, PathBuf};

use half::slice::HalfFloatSliceExt;
use index_format::{IndexWriter, Manifest, SegmentEntry, WriteLock};

use super::{Index, Part};
use crate::codec::Codec;
use crate::error::{EngineError, Result};
use crate::index::{BuildOptions, Codebook, CompressedBuilder, CompressedParams, IndexBuilder, Segment};

/// Options of [`Writer::begin_add`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    /// Replace documents whose id is already in the index (the old one is deleted in the same
    /// step); otherwise such an id is an error ([`EngineError::DuplicateId`]).
    pub replace: bool,
}

/// What an add published.
#[derive(Debug, Clone, PartialEq)]
pub struct AddReport {
    /// The new segment's directory name.
    pub segment: String,
    /// Documents added.
    pub added: u64,
    /// Tokens added.
    pub tokens: u64,
    /// Ids that were already in the index and were replaced.
    pub replaced: Vec<String>,
}

/// What a delete published.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeleteReport {
    /// Ids deleted.
    pub deleted: Vec<String>,
    /// Ids that were not in the index (never added, or already deleted), in the order given.
    pub missing: Vec<String>,
}

/// How [`Writer::compact_with`] writes the compacted index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactOptions {
    /// Keep the centroid-grouped layout the WARP mode reads (format v7's `warp_*` files) in the
    /// compacted index: `Some(true)` adds it, `Some(false)` drops it, `None` keeps what the base
    /// segment has. (Compressed indexes only; segments added later follow the base.)
    pub warp_layout: Option<bool>,
}

/// What a compaction published.
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    /// Live documents kept.
    pub docs: u64,
    /// Deleted documents dropped.
    pub dropped: u64,
    /// Segments merged.
    pub segments: usize,
    /// Whether the base segment had a BM25 sub-index, which compaction does not carry over.
    pub dropped_bm25: bool,
}

/// The one process allowed to change an index: holds its write lock (see
/// [`index_format::WriteLock`]) until dropped. Readers are never blocked.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    lock: WriteLock,
    index: Index,
}

impl Writer {
    /// Takes the write lock of the index in `dir` and opens it. Leftovers of earlier updates that
    /// were killed before they published (unnamed segment directories, temporary files) are
    /// removed.
    ///
    /// # Errors
    /// [`EngineError::Busy`] naming the holder if another process is changing the index; as
    /// [`Index::open`] otherwise.
    pub fn open(dir: impl AsRef<Path>, what: &str) -> Result<Writer> {
        let dir = dir.as_ref();
        let lock = WriteLock::acquire(dir, what)?;
        let index = Index::open(dir)?;
        let leftovers = index_format::manifest::unused_entries(dir, Some(index.manifest()));
        for path in leftovers {
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        Ok(Writer { dir: dir.to_path_buf(), lock, index })
    }

    /// The index as this writer last published it (or found it).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Starts adding documents: they go into one new segment, encoded against the index's
    /// centroids and codec, published by [`Adding::commit`].
    ///
    /// # Errors
    /// If the segment cannot be created.
    pub fn begin_add(&mut self, options: AddOptions) -> Result<Adding<'_>> {
        let name = Manifest::segment_name(self.index.manifest().next_segment);
        let writer = IndexWriter::create_segment(&self.dir, &name)?;
        let base = &self.index.inner.parts[0].seg;
        let meta = base.meta();
        let build_options = BuildOptions {
            overwrite: false,
            encoder: meta.encoder.clone(),
            build_params: serde_json::json!({ "added_as": name }),
        };
        let builder = match codebook(base)? {
            Some(cb) => {
                let warp_layout = has_warp_layout(base);
                SegmentBuilder::Compressed(Box::new(encoding_builder(
                    writer,
                    base,
                    cb,
                    build_options,
                    warp_layout,
                )?))
            }
            None => {
                SegmentBuilder::Plain(Box::new(IndexBuilder::create_in(writer, meta.dim, build_options)?))
            }
        };
        Ok(Adding {
            writer: self,
            name,
            builder,
            options,
            replaced: Vec::new(),
            replaced_ids: Vec::new(),
            tokens: 0,
        })
    }

    /// Deletes the documents with these external ids: they are never returned again; other
    /// documents keep their ids. Ids not in the index are reported, not an error.
    ///
    /// # Errors
    /// If the manifest cannot be written.
    pub fn delete<S: AsRef<str>>(&mut self, ids: &[S]) -> Result<DeleteReport> {
        let mut manifest = self.index.manifest().clone();
        let mut report = DeleteReport::default();
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let id = id.as_ref();
            if !seen.insert(id) {
                continue;
            }
            match self.index.locate(id) {
                Some((i, d)) => {
                    insert_sorted(&mut manifest.segments[i].deleted, d);
                    report.deleted.push(id.to_string());
                }
                None => report.missing.push(id.to_string()),
            }
        }
        if !report.deleted.is_empty() {
            self.publish(manifest)?;
        }
        Ok(report)
    }

    /// Merges every segment into one new base segment without the deleted documents, and
    /// replaces the index with it in one atomic step (the directory is exchanged; a reader that
    /// had the old one open keeps reading it). Documents are copied encoded, not re-encoded:
    /// scores are unchanged.
    ///
    /// # Errors
    /// If no document is left, or a file cannot be read or written.
    pub fn compact(self) -> Result<Compacted> {
        self.compact_with(CompactOptions::default())
    }

    /// [`Writer::compact`] with options: e.g. adding or dropping the centroid-grouped layout of a
    /// compressed index ([`CompactOptions::warp_layout`]).
    ///
    /// # Errors
    /// As [`Writer::compact`].
    pub fn compact_with(self, options: CompactOptions) -> Result<Compacted> {
        let live = self.index.n_docs();
        if live == 0 {
            return Err(EngineError::InvalidArgument(format!(
                "{}: every document is deleted; an index needs at least one (build a new one instead)",
                self.dir.display()
            )));
        }
        let parts = &self.index.inner.parts;
        let base = &parts[0].seg;
        let meta = base.meta();
        if options.warp_layout == Some(true) && meta.residual.is_none() {
            return Err(EngineError::InvalidArgument(format!(
                "{}: the centroid-grouped WARP layout groups compressed codes; this index is \
                 uncompressed (--nbits 16)",
                self.dir.display()
            )));
        }
        let writer = IndexWriter::create_replacement(&self.dir, &self.lock)?;
        let build_options = BuildOptions {
            overwrite: true,
            encoder: meta.encoder.clone(),
            build_params: serde_json::json!({ "compacted_segments": parts.len() }),
        };
        let manifest = self.index.manifest();
        let dropped: u64 = manifest.segments.iter().map(|s| s.deleted.len() as u64).sum();
        let live_docs = |i: usize, part: &Part| {
            let deleted = manifest.segments[i].deleted.clone();
            (0..part.seg.n_docs() as u32).filter(move |d| deleted.binary_search(d).is_err())
        };
        match codebook(base)? {
            Some(cb) => {
                let warp_layout = options.warp_layout.unwrap_or_else(|| has_warp_layout(base));
                let mut b = encoding_builder(writer, base, cb, build_options, warp_layout)?;
                let mut codes = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let view = part.seg.compressed().ok_or_else(|| mixed_kinds(&part.name))?;
                    for d in live_docs(i, part) {
                        let (residuals, exact) = view.encoded_doc(d, &mut codes)?;
                        b.add_encoded(&part.seg.doc_id(d), &codes, residuals, exact)?;
                    }
                }
                b.finish()?;
            }
            None => {
                let mut b = IndexBuilder::create_in(writer, meta.dim, build_options)?;
                let mut buf = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let reader = part.seg.reader();
                    if reader.residual().is_some() {
                        return Err(mixed_kinds(&part.name));
                    }
                    for d in live_docs(i, part) {
                        let tokens = reader.doc_embeddings(d as usize)?;
                        buf.resize(tokens.len(), 0.0);
                        tokens.convert_to_f32_slice(&mut buf);
                        b.add(&part.seg.doc_id(d), &buf)?;
                    }
                }
                b.finish()?;
            }
        }
        Ok(Compacted {
            docs: live,
            dropped,
            segments: parts.len(),
            dropped_bm25: self.dir.join(crate::index::BM25_DIR).is_dir(),
        })
    }

    /// Publishes `manifest` (with the next generation) and moves to the new snapshot.
    fn publish(&mut self, mut manifest: Manifest) -> Result<()> {
        manifest.generation += 1;
        manifest.publish(&self.dir)?;
        self.index = self.index.reload()?;
        Ok(())
    }
}

/// Whether `seg` stores the centroid-grouped layout (format v7's `warp_*` files).
fn has_warp_layout(seg: &Segment) -> bool {
    seg.meta().residual.is_some_and(|r| r.warp_layout)
}

/// A compressed builder writing into `writer` with `base`'s kind, nbits, f16 tier and codebook,
/// with or without the centroid-grouped layout.
fn encoding_builder(
    writer: IndexWriter,
    base: &Segment,
    codebook: Codebook,
    options: BuildOptions,
    warp_layout: bool,
) -> Result<CompressedBuilder> {
    let meta = base.meta();
    let params = CompressedParams {
        store_f16: base.reader().has_embeddings(),
        warp_layout,
        ..CompressedParams::new(meta.kind.nbits())
    };
    let mut b = CompressedBuilder::create_in(writer, meta.dim, params, options)?;
    b.with_codebook(codebook)?;
    Ok(b)
}

fn mixed_kinds(name: &str) -> EngineError {
    EngineError::InvalidArgument(format!("segment {name} is of another kind than the base segment"))
}

fn insert_sorted(v: &mut Vec<u32>, d: u32) {
    if let Err(pos) = v.binary_search(&d) {
        v.insert(pos, d);
    }
}

/// The codebook of a compressed segment, to encode new documents exactly as its own were
/// encoded; `None` for an uncompressed one.
fn codebook(seg: &Segment) -> Result<Option<Codebook>> {
    let (Some(state), Some(r), Some((cutoffs, weights))) =
        (seg.compressed_state(), seg.reader().residual(), seg.reader().buckets())
    else {
        return Ok(None);
    };
    let meta = seg.meta();
    // The stored decoding tables may be scaled (see the build's `residual_scale`); tokens are
    // encoded against the trained ones.
    let scale = meta.build.get("residual_scale").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32;
    let scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
    let unscaled: Vec<f32> = weights.iter().map(|w| w / scale).collect();
    let codec = Codec::from_parts(meta.dim, meta.kind.nbits(), cutoffs.to_vec(), unscaled)?;
    let mut stored_buckets = cutoffs.to_vec();
    stored_buckets.extend_from_slice(weights);
    Ok(Some(Codebook {
        centroids: state.centroids().to_vec(),
        codec,
        stored_buckets,
        unit_norm: r.unit_norm,
        build: meta.build.clone(),
    }))
}

enum SegmentBuilder {
    Compressed(Box<CompressedBuilder>),
    Plain(Box<IndexBuilder>),
}

/// Documents being added as one new segment; nothing is visible until [`Adding::commit`], and
/// dropping it discards them.
pub struct Adding<'w> {
    writer: &'w mut Writer,
    name: String,
    builder: SegmentBuilder,
    options: AddOptions,
    /// (segment position, document) of the documents replaced.
    replaced: Vec<(usize, u32)>,
    replaced_ids: Vec<String>,
    tokens: u64,
}

impl std::fmt::Debug for Adding<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adding").field("segment", &self.name).field("tokens", &self.tokens).finish()
    }
}

impl Adding<'_> {
    /// Adds one document: its external id and its token embeddings (row-major `[n × dim]`, the
    /// index's dimension; unit-norm if the index's tokens are).
    ///
    /// # Errors
    /// [`EngineError::DuplicateId`] if the id is in the index and replacing was not asked for;
    /// as the builders' `add` for bad ids, shapes and values.
    pub fn add(&mut self, id: &str, tokens: &[f32]) -> Result<()> {
        if let Some(at) = self.writer.index.locate(id) {
            if !self.options.replace {
                return Err(EngineError::DuplicateId { id: id.to_string() });
            }
            self.replaced.push(at);
            self.replaced_ids.push(id.to_string());
        }
        match &mut self.builder {
            SegmentBuilder::Compressed(b) => b.add(id, tokens)?,
            SegmentBuilder::Plain(b) => b.add(id, tokens)?,
        }
        self.tokens += (tokens.len() / self.writer.index.dim()) as u64;
        Ok(())
    }

    /// Documents added so far.
    pub fn len(&self) -> usize {
        match &self.builder {
            SegmentBuilder::Compressed(b) => b.n_docs(),
            SegmentBuilder::Plain(b) => b.n_docs(),
        }
    }

    /// Whether no document was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the segment, then publishes a manifest naming it (and deleting the documents it
    /// replaces) in one atomic step.
    ///
    /// # Errors
    /// If no document was added, or a file cannot be written.
    pub fn commit(self) -> Result<AddReport> {
        let Adding { writer, name, builder, replaced, replaced_ids, tokens, .. } = self;
        let meta = match builder {
            SegmentBuilder::Compressed(b) => b.finish()?,
            SegmentBuilder::Plain(b) => b.finish()?,
        };
        let mut manifest = writer.index.manifest().clone();
        for (i, d) in replaced {
            insert_sorted(&mut manifest.segments[i].deleted, d);
        }
        manifest.segments.push(SegmentEntry { name: name.clone(), n_docs: meta.n_docs, deleted: Vec::new() });
        manifest.next_segment += 1;
        writer.publish(manifest)?;
        Ok(AddReport { segment: name, added: meta.n_docs, tokens, replaced: replaced_ids })
    }
}
