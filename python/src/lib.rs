//! `colbert_index._native`: the engine's Python bindings. The public Python API (argument
//! normalisation, docstrings, type stubs) is the pure-Python package `colbert_index` around this
//! module; this layer takes already-normalised arguments (C-contiguous float32/float16 arrays,
//! int64 lengths, lists of str), releases the GIL for every piece of engine work, and turns
//! engine errors into Python exceptions carrying the CLI's one-line messages.
#![forbid(unsafe_code)]

mod convert;
mod errors;

use std::path::PathBuf;
use std::sync::RwLock;

use engine::index::{build_from_source, BuildStage, InMemory, SourceBuild, DEFAULT_TRAIN_MEMORY};
use engine::store::{AddOptions, Query, Writer};
use engine::{BuildOptions, CompressedParams, KernelChoice, SearchMode, SearchParams};
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use convert::{hits, Embeddings, Hits};
use errors::{build_error, invalid, to_py};

/// Who holds the write lock while this package changes an index (shown to a second writer).
fn lock_holder() -> String {
    format!("the colbert_index Python package (pid {})", std::process::id())
}

/// The options of `Index.build`, passed as a dict of these keys.
#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
struct BuildKnobs {
    nbits: u32,
    store_f16: bool,
    warp_layout: bool,
    centroids: Option<usize>,
    sample_docs: Option<usize>,
    train_memory_mib: Option<usize>,
    kmeans_iters: usize,
    seed: u64,
    codec: String,
    kernels: String,
    overwrite: bool,
}

impl BuildKnobs {
    fn source_build<'a>(
        &self,
        ids: Option<&'a [String]>,
        encoder: Option<serde_json::Value>,
        build_params: serde_json::Value,
    ) -> PyResult<SourceBuild<'a>> {
        let options = BuildOptions { overwrite: self.overwrite, encoder, build_params };
        let compressed = match self.nbits {
            16 if self.warp_layout => {
                return Err(invalid(
                    "warp_layout groups compressed codes: use it with nbits 1, 2 or 4".to_string(),
                ))
            }
            16 => None,
            1 | 2 | 4 => {
                let codec = match self.codec.as_str() {
                    "joint" => engine::codec::CodecConfig::joint(self.nbits),
                    "per-dim" | "per_dim" => engine::codec::CodecConfig::per_dim(self.nbits),
                    "pooled" => engine::codec::CodecConfig::pooled(self.nbits),
                    other => {
                        return Err(invalid(format!(
                            "codec {other:?}: use \"joint\", \"per-dim\" or \"pooled\""
                        )))
                    }
                };
                Some(CompressedParams {
                    n_centroids: self.centroids,
                    kmeans_iters: self.kmeans_iters,
                    seed: self.seed,
                    store_f16: self.store_f16,
                    warp_layout: self.warp_layout,
                    codec,
                    kernels: kernel_choice(&self.kernels)?.resolve().map_err(|e| to_py(e.into()))?,
                    ..CompressedParams::new(self.nbits)
                })
            }
            n => {
                return Err(invalid(format!(
                    "nbits {n}: use 1, 2 or 4 (compressed) or 16 (uncompressed f16)"
                )))
            }
        };
        let train_memory = match self.train_memory_mib {
            None => DEFAULT_TRAIN_MEMORY,
            Some(0) => return Err(invalid("train_memory_mib 0: give a size in MiB, at least 1".into())),
            Some(m) => {
                m.checked_mul(1 << 20).ok_or_else(|| invalid(format!("train_memory_mib {m} is too large")))?
            }
        };
        Ok(SourceBuild { ids, compressed, sample_docs: self.sample_docs, train_memory, options })
    }
}

fn kernel_choice(name: &str) -> PyResult<KernelChoice> {
    Ok(match name {
        "auto" => KernelChoice::Auto,
        "avx512" => KernelChoice::Avx512,
        "avx2" => KernelChoice::Avx2,
        "portable" => KernelChoice::Portable,
        other => {
            return Err(invalid(format!(
                "kernels {other:?}: use \"auto\", \"avx512\", \"avx2\" or \"portable\""
            )))
        }
    })
}

/// Builds an index at `path` from token embeddings (`[tokens, dim]` float32 or float16, C
/// order) and per-document token counts.
#[pyfunction]
#[pyo3(signature = (path, embeddings, doclens, ids, knobs, progress=None))]
fn build_embeddings(
    py: Python<'_>,
    path: PathBuf,
    embeddings: &Bound<'_, PyAny>,
    doclens: PyReadonlyArray1<'_, i64>,
    ids: Option<Vec<String>>,
    knobs: BuildKnobs,
    progress: Option<Py<PyAny>>,
) -> PyResult<()> {
    let emb = Embeddings::extract(embeddings)?;
    let lens = convert::doclens(&doclens)?;
    let params = serde_json::json!({ "nbits": knobs.nbits, "source": "python" });
    let job = knobs.source_build(ids.as_deref(), None, params)?;
    let source = emb.source(&lens)?;
    let report = Progress(progress);
    py.detach(|| build_from_source(&path, &source, job, &mut |stage| report.stage(stage)))
        .map_err(|e| build_error(&path, e))?;
    Ok(())
}

/// Encodes `texts` with the model in `model` and builds an index of them at `path`, recording the
/// model so that text queries are encoded the same way.
#[pyfunction]
#[pyo3(signature = (path, texts, ids, model, batch_size, knobs, progress=None))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments
fn build_texts(
    py: Python<'_>,
    path: PathBuf,
    texts: Vec<String>,
    ids: Option<Vec<String>>,
    model: PathBuf,
    batch_size: usize,
    knobs: BuildKnobs,
    progress: Option<Py<PyAny>>,
) -> PyResult<()> {
    use engine::encoder::{Encoder, EncoderOptions};
    let report = Progress(progress);
    let choice = kernel_choice(&knobs.kernels)?;
    let failed = |e| build_error(&path, e);
    py.detach(|| -> PyResult<()> {
        let options =
            EncoderOptions { batch_size: batch_size.max(1), kernels: choice, ..EncoderOptions::default() };
        let encoder = Encoder::load(&model, options).map_err(failed)?;
        let dim = encoder.dim();
        // Documents are rounded to f16 as encoded (what the index stores), as the CLI does.
        let mut rows: Vec<half::f16> = Vec::new();
        let mut lens: Vec<u64> = Vec::with_capacity(texts.len());
        report.call("encoding", 0, texts.len() as u64);
        for chunk in texts.chunks(1024) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for doc in encoder.encode_documents(&refs).map_err(failed)? {
                lens.push((doc.len() / dim) as u64);
                rows.extend(doc.iter().map(|&v| half::f16::from_f32(v)));
            }
            report.call("encoding", lens.len() as u64, texts.len() as u64);
        }
        let params =
            serde_json::json!({ "nbits": knobs.nbits, "model": model.display().to_string(), "source": "python" });
        let job = knobs.source_build(ids.as_deref(), Some(encoder.recorded_identity(&model)), params)?;
        let source = InMemory::f16(&rows, dim, &lens).map_err(failed)?;
        build_from_source(&path, &source, job, &mut |stage| report.stage(stage)).map(drop).map_err(failed)
    })
}

/// Reads a collection file (ColBERT TSV or BEIR JSONL) as the CLI does: returns `(ids, texts,
/// skipped_empty)`, a BEIR record's title and text joined.
#[pyfunction]
fn read_collection(py: Python<'_>, path: PathBuf) -> PyResult<(Vec<String>, Vec<String>, usize)> {
    py.detach(|| -> engine::Result<_> {
        let mut reader = engine::corpus::CorpusReader::open(&path)?;
        let (mut ids, mut texts) = (Vec::new(), Vec::new());
        for record in reader.by_ref() {
            let record = record?;
            texts.push(record.full_text());
            ids.push(record.id);
        }
        Ok((ids, texts, reader.skipped_empty()))
    })
    .map_err(to_py)
}

/// A build's progress callback, `progress(stage, done, total)`, called from the build's thread
/// with the GIL taken for the call: `("encoding", documents, documents)` for a text build,
/// `("training", 0, tokens)` once, then `("writing", rows, rows)`. An exception it raises is
/// reported as unraisable (`sys.unraisablehook`) and the build goes on.
struct Progress(Option<Py<PyAny>>);

impl Progress {
    fn call(&self, stage: &str, done: u64, total: u64) {
        if let Some(callback) = &self.0 {
            Python::attach(|py| {
                if let Err(e) = callback.call1(py, (stage, done, total)) {
                    e.write_unraisable(py, Some(callback.bind(py)));
                }
            });
        }
    }

    fn stage(&self, stage: BuildStage) {
        match stage {
            BuildStage::Training { tokens } => self.call("training", 0, tokens as u64),
            BuildStage::Writing { done, total } => self.call("writing", done, total),
        }
    }
}

/// An open index (see `colbert_index.Index`).
#[pyclass(frozen, module = "colbert_index._native")]
struct NativeIndex {
    index: RwLock<engine::Index>,
}

impl NativeIndex {
    /// The current snapshot (cheap: an `Arc` clone).
    fn snapshot(&self) -> engine::Index {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, index: engine::Index) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
    }

    /// Takes the write lock, lets `fill` add documents to a new segment (it gets the index as
    /// the writer found it), publishes it and serves the result; returns the number added and
    /// the ids replaced.
    fn add_with(
        &self,
        py: Python<'_>,
        replace: bool,
        fill: impl FnOnce(&mut engine::store::Adding<'_>, &engine::Index) -> engine::Result<()> + Send,
    ) -> PyResult<(u64, Vec<String>)> {
        let dir = self.snapshot().dir().to_path_buf();
        let (report, index) = py
            .detach(|| -> engine::Result<_> {
                let mut writer = Writer::open(&dir, &lock_holder())?;
                let current = writer.index().clone();
                let mut adding = writer.begin_add(AddOptions { replace })?;
                fill(&mut adding, &current)?;
                let report = adding.commit()?;
                Ok((report, writer.index().clone()))
            })
            .map_err(to_py)?;
        self.replace(index);
        Ok((report.added, report.replaced))
    }
}

/// Search knobs from keyword arguments; unset ones take the defaults for `k`.
#[allow(clippy::too_many_arguments)] // Python keyword arguments
fn search_params(
    k: usize,
    ncells: Option<usize>,
    threshold: Option<f32>,
    ndocs: Option<usize>,
    exhaustive: bool,
    mode: &str,
    nprobe: Option<usize>,
    warp_rescore: Option<usize>,
) -> PyResult<SearchParams> {
    if k == 0 {
        return Err(invalid("k must be at least 1".into()));
    }
    let mut params = SearchParams::for_k(k);
    params.mode = match mode {
        "auto" => SearchMode::Auto,
        "plaid" => SearchMode::Plaid,
        "warp" => SearchMode::Warp,
        other => return Err(invalid(format!("mode must be \"auto\", \"plaid\" or \"warp\", not {other:?}"))),
    };
    if nprobe == Some(0) {
        return Err(invalid("nprobe must be at least 1".into()));
    }
    params.nprobe = nprobe;
    params.warp_rescore = warp_rescore;
    if let Some(n) = ncells {
        params.ncells = n.max(1);
    }
    if let Some(t) = threshold {
        params.centroid_score_threshold = t;
    }
    if let Some(n) = ndocs {
        params.ndocs = n.max(k);
        params.scale_ndocs = false;
    }
    params.exhaustive = exhaustive;
    Ok(params)
}

#[pymethods]
impl NativeIndex {
    /// Opens the index in `path` (memory-mapped).
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<NativeIndex> {
        let index = py.detach(|| engine::Index::open(&path)).map_err(to_py)?;
        Ok(NativeIndex { index: RwLock::new(index) })
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.snapshot().dir().to_path_buf()
    }

    /// The embedding dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.snapshot().dim()
    }

    /// Live documents.
    fn __len__(&self) -> usize {
        usize::try_from(self.snapshot().n_docs()).unwrap_or(usize::MAX)
    }

    /// The metadata, sizes and segments, as JSON text.
    fn info_json(&self) -> PyResult<String> {
        let index = self.snapshot();
        let mut v = serde_json::to_value(index.meta()).map_err(|e| invalid(e.to_string()))?;
        v["dir"] = index.dir().display().to_string().into();
        v["live_docs"] = index.n_docs().into();
        let manifest = index.manifest();
        v["generation"] = manifest.generation.into();
        v["segments"] = manifest
            .segments
            .iter()
            .map(|s| serde_json::json!({ "name": s.name, "docs": s.n_docs, "deleted": s.deleted.len() }))
            .collect();
        Ok(v.to_string())
    }

    /// Batch search: `queries` is a list of str (encoded with the index's recorded model) or a
    /// list of C-contiguous float32 `[len, dim]` arrays.
    #[pyo3(signature = (queries, k, ncells=None, threshold=None, ndocs=None, exhaustive=false, mode="plaid", nprobe=None, warp_rescore=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn search(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: usize,
        ncells: Option<usize>,
        threshold: Option<f32>,
        ndocs: Option<usize>,
        exhaustive: bool,
        mode: &str,
        nprobe: Option<usize>,
        warp_rescore: Option<usize>,
    ) -> PyResult<Vec<Hits>> {
        let params = search_params(k, ncells, threshold, ndocs, exhaustive, mode, nprobe, warp_rescore)?;
        let index = self.snapshot();
        let results = if let Ok(texts) = queries.extract::<Vec<String>>() {
            py.detach(|| {
                let queries: Vec<Query<'_>> = texts.iter().map(|q| Query::Text(q)).collect();
                index.search_batch(&queries, k, &params)
            })
        } else {
            let arrays: Vec<numpy::PyReadonlyArray2<'_, f32>> = queries.extract()?;
            let views = convert::query_views(&arrays, index.dim())?;
            py.detach(|| {
                let queries = views
                    .iter()
                    .map(|&(data, dim)| Query::tokens(data, dim))
                    .collect::<Result<Vec<_>, _>>()?;
                index.search_batch(&queries, k, &params)
            })
        };
        Ok(results.map_err(to_py)?.into_iter().map(hits).collect())
    }

    /// Scores exactly `candidates` (external ids) against one query (a float32 `[len, dim]`
    /// array, or text); returns `(hits, missing)`.
    fn rerank(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        candidates: Vec<String>,
        k: usize,
    ) -> PyResult<(Hits, Vec<String>)> {
        let index = self.snapshot();
        let reranked = if let Ok(text) = query.extract::<String>() {
            py.detach(|| index.rerank(Query::Text(&text), &candidates, k))
        } else {
            let array: numpy::PyReadonlyArray2<'_, f32> = query.extract()?;
            let views = convert::query_views(std::slice::from_ref(&array), index.dim())?;
            let (data, dim) = views[0];
            py.detach(|| index.rerank(Query::tokens(data, dim)?, &candidates, k))
        }
        .map_err(to_py)?;
        Ok((hits(reranked.hits), reranked.missing))
    }

    /// Adds documents (a new segment encoded against the index's centroids); returns the number
    /// added and the ids replaced.
    #[pyo3(signature = (embeddings, doclens, ids, replace=false))]
    fn add(
        &self,
        py: Python<'_>,
        embeddings: &Bound<'_, PyAny>,
        doclens: PyReadonlyArray1<'_, i64>,
        ids: Vec<String>,
        replace: bool,
    ) -> PyResult<(u64, Vec<String>)> {
        let emb = Embeddings::extract(embeddings)?;
        let lens = convert::doclens(&doclens)?;
        let source = emb.source(&lens)?;
        self.add_with(py, replace, |adding, _| {
            engine::index::stream_documents(&source, Some(&ids), &mut |id, t| adding.add(id, t), &mut |_| {})
        })
    }

    /// Adds documents given as text, encoded with the index's recorded model; returns the number
    /// added and the ids replaced.
    #[pyo3(signature = (texts, ids, replace=false))]
    fn add_texts(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        ids: Vec<String>,
        replace: bool,
    ) -> PyResult<(u64, Vec<String>)> {
        self.add_with(py, replace, |adding, index| {
            let encoder = index.encoder()?;
            for (texts, ids) in texts.chunks(1024).zip(ids.chunks(1024)) {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                for (id, tokens) in ids.iter().zip(encoder.encode_documents(&refs)?) {
                    adding.add(id, &tokens)?;
                }
            }
            Ok(())
        })
    }

    /// Deletes documents by id; returns `(deleted, missing)`.
    fn delete(&self, py: Python<'_>, ids: Vec<String>) -> PyResult<(Vec<String>, Vec<String>)> {
        let dir = self.snapshot().dir().to_path_buf();
        let (report, index) = py
            .detach(|| -> engine::Result<_> {
                let mut writer = Writer::open(&dir, &lock_holder())?;
                let report = writer.delete(&ids)?;
                Ok((report, writer.index().clone()))
            })
            .map_err(to_py)?;
        self.replace(index);
        Ok((report.deleted, report.missing))
    }

    /// Merges segments and drops deleted documents, adding (`Some(true)`) or dropping
    /// (`Some(false)`) the stored WARP layout or keeping the base's (`None`); returns
    /// `(docs kept, docs dropped)`.
    #[pyo3(signature = (warp_layout=None))]
    fn compact(&self, py: Python<'_>, warp_layout: Option<bool>) -> PyResult<(u64, u64)> {
        let dir = self.snapshot().dir().to_path_buf();
        let options = engine::store::CompactOptions { warp_layout };
        let (done, index) = py
            .detach(|| -> engine::Result<_> {
                let done = Writer::open(&dir, &lock_holder())?.compact_with(options)?;
                Ok((done, engine::Index::open(&dir)?))
            })
            .map_err(to_py)?;
        self.replace(index);
        Ok((done.docs, done.dropped))
    }

    /// Re-reads the index from disk (changes another process published).
    fn reload(&self, py: Python<'_>) -> PyResult<()> {
        let index = self.snapshot();
        let fresh = py.detach(|| index.reload()).map_err(to_py)?;
        self.replace(fresh);
        Ok(())
    }

    /// Prepares WARP mode now (builds its in-memory layout, or maps a stored one's pages);
    /// returns the bytes held in memory.
    fn prepare_warp(&self, py: Python<'_>) -> PyResult<usize> {
        let index = self.snapshot();
        py.detach(|| index.prepare_warp()).map_err(to_py)
    }

    /// Bytes of the stored WARP layout's files (0 without one): what `prepare_warp` maps.
    #[getter]
    fn stored_warp_bytes(&self) -> u64 {
        self.snapshot().stored_warp_bytes()
    }

    /// Checks every file's checksum.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let index = self.snapshot();
        py.detach(|| index.verify()).map(drop).map_err(to_py)
    }
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<NativeIndex>()?;
    m.add_function(wrap_pyfunction!(build_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(build_texts, m)?)?;
    m.add_function(wrap_pyfunction!(read_collection, m)?)?;
    Ok(())
}
