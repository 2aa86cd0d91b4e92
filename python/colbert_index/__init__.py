"""ColBERT late-interaction search from Python: build, search, rerank and update indexes.

Quick start::

    import numpy as np, colbert_index
    index = colbert_index.Index.build("my-index", documents=[np.random.rand(30, 128).astype("f4") for _ in range(1000)])
    print(index.search(np.random.rand(32, 128).astype("f4"), k=5))

An index is the same directory the ``colbert-index`` command line writes and reads: build it
with either, search and update it with either. Every call that does engine work releases the
GIL, so Python threads search one index in parallel.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import ColbertIndexError, CorruptIndexError, DuplicateIdError, IndexBusyError

__all__ = [
    "Index",
    "Reranked",
    "ColbertIndexError",
    "CorruptIndexError",
    "DuplicateIdError",
    "IndexBusyError",
]

Hit = Tuple[str, float]
PathLike = Union[str, "os.PathLike[str]"]

_FLOATS = (np.float16, np.float32)


def _as_matrix(value: Any, what: str) -> np.ndarray:
    """A C-contiguous 2-D float16/float32 array viewing ``value`` where its layout allows.

    Accepts numpy arrays and anything ``np.asarray`` understands (CPU PyTorch tensors, lists);
    float64 is converted to float32. Other dtypes raise TypeError.
    """
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype not in _FLOATS:
        raise TypeError(f"{what}: dtype {array.dtype} is not a float type; pass float32 or float16 values")
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array [tokens, dim], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what}: empty array of shape {array.shape}")
    return np.ascontiguousarray(array)


def _as_doclens(doclens: Any, n_rows: int) -> np.ndarray:
    lens = np.asarray(doclens)
    if lens.ndim != 1 or lens.size == 0:
        raise ValueError(f"doclens: expected a non-empty 1-D sequence of token counts, got shape {lens.shape}")
    if not np.issubdtype(lens.dtype, np.integer):
        raise TypeError(f"doclens: dtype {lens.dtype} is not an integer type")
    lens = np.ascontiguousarray(lens, dtype=np.int64)
    if (lens <= 0).any():
        bad = int(np.argmax(lens <= 0))
        raise ValueError(f"doclens[{bad}] = {int(lens[bad])}: every document needs at least one token")
    if int(lens.sum()) != n_rows:
        raise ValueError(f"doclens add up to {int(lens.sum())} tokens, but embeddings has {n_rows} rows")
    return lens


def _rows_and_lens(embeddings: Any, doclens: Any, documents: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Flat ``[tokens, dim]`` rows and per-document lengths from either input form."""
    if documents is not None:
        if embeddings is not None or doclens is not None:
            raise ValueError("give either documents=[arrays] or embeddings= with doclens=, not both")
        docs = [_as_matrix(d, f"documents[{i}]") for i, d in enumerate(documents)]
        if not docs:
            raise ValueError("documents: no documents given")
        dims = {d.shape[1] for d in docs}
        if len(dims) > 1:
            raise ValueError(f"documents: arrays of different dimensions {sorted(dims)}")
        dtype = np.float16 if all(d.dtype == np.float16 for d in docs) else np.float32
        rows = np.concatenate([d.astype(dtype, copy=False) for d in docs])
        return rows, np.array([d.shape[0] for d in docs], dtype=np.int64)
    if embeddings is None or doclens is None:
        raise ValueError("give embeddings= (a [tokens, dim] array) with doclens=, or documents=[arrays]")
    rows = _as_matrix(embeddings, "embeddings")
    return rows, _as_doclens(doclens, rows.shape[0])


def _as_ids(ids: Optional[Iterable[Any]], n: Optional[int]) -> Optional[List[str]]:
    if ids is None:
        return None
    out = []
    for i, value in enumerate(ids):
        if isinstance(value, (str, int, np.integer)) and not isinstance(value, bool):
            out.append(str(value))
        else:
            raise TypeError(f"ids[{i}]: {type(value).__name__} is not a str (or int) id")
    if n is not None and len(out) != n:
        raise ValueError(f"{len(out)} ids given for {n} documents")
    return out


def _as_texts(texts: Iterable[Any]) -> List[str]:
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: {type(t).__name__} is not a str")
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty: every document needs text")
    return out


def _queries(queries: Any) -> Tuple[Union[List[np.ndarray], List[str]], bool]:
    """Normalises one query or a batch: returns (queries, single)."""
    if isinstance(queries, str):
        return [queries], True
    if isinstance(queries, (list, tuple)):
        if not queries:
            raise ValueError("queries: an empty batch")
        if all(isinstance(q, str) for q in queries):
            return list(queries), False
        return [_as_query(q, f"queries[{i}]") for i, q in enumerate(queries)], False
    array = np.asarray(queries)
    if array.ndim == 3:
        return [_as_query(q, f"queries[{i}]") for i, q in enumerate(array)], False
    return [_as_query(array, "query")], True


def _as_query(value: Any, what: str) -> np.ndarray:
    return _as_matrix(value, what).astype(np.float32, copy=False)


class Reranked:
    """The result of :meth:`Index.rerank`: ``hits`` (``(id, score)`` pairs, best first; ties by
    id) and ``missing`` (candidate ids that are not in the index: never added, or deleted).

    Iterating, indexing and ``len`` act on ``hits``.
    """

    __slots__ = ("hits", "missing")

    def __init__(self, hits: List[Hit], missing: List[str]):
        self.hits = hits
        self.missing = missing

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i):
        return self.hits[i]

    def __repr__(self) -> str:
        return f"Reranked(hits={self.hits!r}, missing={self.missing!r})"


def _numpy_hits(hits: List[Hit]) -> Tuple[np.ndarray, np.ndarray]:
    ids = np.array([h[0] for h in hits], dtype=object)
    scores = np.array([h[1] for h in hits], dtype=np.float32)
    return ids, scores


class Index:
    """An open index: memory-mapped, safe to share between threads.

    Create one with :meth:`Index.build` or :meth:`Index.open`.
    """

    __slots__ = ("_native",)

    def __init__(self, native: "_native.NativeIndex"):
        self._native = native

    # ----------------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        path: PathLike,
        embeddings: Any = None,
        doclens: Any = None,
        *,
        documents: Optional[Sequence[Any]] = None,
        texts: Optional[Sequence[str]] = None,
        collection: Optional[PathLike] = None,
        model: Optional[PathLike] = None,
        ids: Optional[Iterable[Any]] = None,
        nbits: int = 2,
        store_f16: bool = False,
        warp_layout: bool = False,
        centroids: Optional[int] = None,
        sample_docs: Optional[int] = None,
        train_memory_mib: Optional[int] = None,
        kmeans_iters: int = 4,
        seed: int = 0,
        codec: str = "joint",
        kernels: str = "auto",
        batch_size: int = 32,
        overwrite: bool = False,
        progress: Optional[Callable[[str, int, int], None]] = None,
    ) -> "Index":
        """Builds an index at ``path`` and opens it.

        From token embeddings (the same index ``colbert-index build --embeddings`` writes):

        - ``embeddings``: a ``[total_tokens, dim]`` float32 or float16 array (used in place when
          C-contiguous; float64 is converted) with ``doclens``, the token count of each document
          in order; or
        - ``documents``: a list of ``[tokens, dim]`` arrays, one per document (what PyLate's
          ``encode`` returns).

        From text, encoded with ``model`` (a ColBERT, PyLate or BERT/ModernBERT checkpoint
        directory, recorded in the index so text queries are encoded the same way):

        - ``texts``: a list of document strings; or
        - ``collection``: a ColBERT TSV (``id<TAB>text``) or BEIR ``corpus.jsonl`` file (ids come
          from the file; empty documents are skipped).

        ``ids`` are the external ids, one per document (default ``"0"``, ``"1"``, ...).
        ``nbits`` 1, 2 or 4 builds a compressed index (centroids and quantised residuals,
        searched with PLAID pruning); 16 keeps exact f16 embeddings (exhaustive search).
        ``warp_layout=True`` also stores the centroid-grouped copy of the codes that
        ``search(..., mode="warp")`` reads in place (about ``dim * nbits / 8 + 6`` more bytes
        per token; no in-memory copy built at the first WARP search). The
        other arguments are those of ``colbert-index build`` (see its ``--help``). Nothing
        appears at ``path`` unless the build succeeds; an existing index is an error unless
        ``overwrite=True``.

        ``progress``, if given, is called as ``progress(stage, done, total)`` while the build
        runs: ``"encoding"`` (documents encoded, text builds), ``"training"`` (once, with the
        number of training tokens as ``total``), then ``"writing"`` (token rows written), e.g.
        to drive a progress bar. It runs on the build's thread with the GIL held; an exception
        it raises is reported through ``sys.unraisablehook`` and the build goes on.
        """
        path = os.fspath(path)
        knobs = {
            "nbits": nbits,
            "store_f16": store_f16,
            "warp_layout": warp_layout,
            "centroids": centroids,
            "sample_docs": sample_docs,
            "train_memory_mib": train_memory_mib,
            "kmeans_iters": kmeans_iters,
            "seed": seed,
            "codec": codec,
            "kernels": kernels,
            "overwrite": overwrite,
        }
        if texts is not None or collection is not None:
            if model is None:
                raise ValueError("building from texts= or collection= needs model= (a model directory)")
            if embeddings is not None or doclens is not None or documents is not None:
                raise ValueError("give either text (texts= or collection=) or embeddings, not both")
            if texts is not None and collection is not None:
                raise ValueError("give texts= or collection=, not both")
            if collection is not None:
                if ids is not None:
                    raise ValueError("collection= carries its own ids; do not pass ids=")
                id_list, text_list, _skipped = _native.read_collection(os.fspath(collection))
            else:
                text_list = _as_texts(texts)
                id_list = _as_ids(ids, len(text_list))
            if not text_list:
                raise ValueError("no documents to index")
            _native.build_texts(path, text_list, id_list, os.fspath(model), batch_size, knobs, progress)
        else:
            if model is not None:
                raise ValueError("model= is for texts= or collection=; embeddings are indexed as given")
            rows, lens = _rows_and_lens(embeddings, doclens, documents)
            _native.build_embeddings(path, rows, lens, _as_ids(ids, len(lens)), knobs, progress)
        return cls.open(path)

    @classmethod
    def open(cls, path: PathLike) -> "Index":
        """Opens the index in ``path`` (memory-mapped; cheap)."""
        return cls(_native.NativeIndex.open(os.fspath(path)))

    # ----------------------------------------------------------------------------- reading
    @property
    def path(self) -> str:
        """The index directory."""
        return os.fspath(self._native.path)

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self._native.dim

    def __len__(self) -> int:
        """Live (not deleted) documents."""
        return len(self._native)

    def __repr__(self) -> str:
        return f"Index({self.path!r}, docs={len(self)}, dim={self.dim})"

    def info(self) -> dict:
        """Metadata: dimensions, token and document counts, compression, the recorded model,
        segments and deletions."""
        return json.loads(self._native.info_json())

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        ncells: Optional[int] = None,
        threshold: Optional[float] = None,
        ndocs: Optional[int] = None,
        exhaustive: bool = False,
        mode: str = "auto",
        nprobe: Optional[int] = None,
        warp_rescore: Optional[int] = None,
        as_numpy: bool = False,
    ):
        """The ``k`` best documents for one query or a batch.

        A query is a ``[len, dim]`` float array of token embeddings or a string (encoded with
        the index's recorded model). A batch is a ``[n, len, dim]`` array, a list of arrays, or
        a list of strings; batches run in parallel on all cores.

        Returns, per query, a list of ``(id, score)`` pairs, best first (ties by id): one list
        for one query, a list of lists for a batch. With ``as_numpy=True`` each query's result
        is ``(ids, scores)``: an object array of ids and a float32 array.

        ``ncells``, ``threshold`` and ``ndocs`` override the PLAID knobs (defaults depend on
        ``k``; see ``colbert-index search --help``); ``exhaustive=True`` scores every document
        of a compressed index (the recall oracle). ``mode="warp"`` runs WARP mode instead of
        PLAID's pruning, with ``nprobe`` centroids per query token and the best ``warp_rescore``
        documents rescored (defaults derived from the index; see docs/WARP.md);
        ``mode="plaid"`` always runs PLAID mode; ``mode="auto"`` (default) runs WARP mode for
        ``k <= 10`` on an index built with ``warp_layout=True``, PLAID mode otherwise.
        """
        normalised, single = _queries(queries)
        knobs = (ncells, threshold, ndocs, exhaustive, mode, nprobe, warp_rescore)
        results = self._native.search(normalised, int(k), *knobs)
        if as_numpy:
            results = [_numpy_hits(r) for r in results]
        return results[0] if single else results

    def rerank(self, query: Any, candidate_ids: Iterable[Any], k: int = 10) -> Reranked:
        """Scores exactly the documents named by ``candidate_ids`` (a first stage's results) by
        MaxSim against ``query`` (a ``[len, dim]`` array or a string) and returns the best
        ``k``. Duplicates are scored once; ids not in the index are listed in ``missing``."""
        ids = _as_ids(candidate_ids, None) or []
        if isinstance(query, str):
            hits, missing = self._native.rerank(query, ids, int(k))
        else:
            hits, missing = self._native.rerank(_as_query(query, "query"), ids, int(k))
        return Reranked(hits, missing)

    # ---------------------------------------------------------------------------- updating
    def add(
        self,
        embeddings: Any = None,
        doclens: Any = None,
        *,
        documents: Optional[Sequence[Any]] = None,
        texts: Optional[Sequence[str]] = None,
        ids: Iterable[Any],
        replace: bool = False,
    ) -> dict:
        """Adds documents with their ``ids`` as a new segment encoded against the index's
        centroids: token embeddings (as for :meth:`build`), or ``texts`` encoded with the
        index's recorded model (an index built from text). An id already in the index raises
        :class:`DuplicateIdError` unless ``replace=True``. Other processes see the change after
        their :meth:`reload`. Returns ``{"added": n, "replaced": [ids]}``."""
        if texts is not None:
            if embeddings is not None or doclens is not None or documents is not None:
                raise ValueError("give either texts= or embeddings, not both")
            text_list = _as_texts(texts)
            if not text_list:
                raise ValueError("texts: no documents given")
            added, replaced = self._native.add_texts(text_list, _as_ids(ids, len(text_list)), bool(replace))
            return {"added": added, "replaced": replaced}
        rows, lens = _rows_and_lens(embeddings, doclens, documents)
        id_list = _as_ids(ids, len(lens))
        added, replaced = self._native.add(rows, lens, id_list, bool(replace))
        return {"added": added, "replaced": replaced}

    def delete(self, ids: Iterable[Any]) -> dict:
        """Deletes documents by id (tombstones; :meth:`compact` reclaims the space). Returns
        ``{"deleted": [ids], "missing": [ids not in the index]}``."""
        deleted, missing = self._native.delete(_as_ids(ids, None) or [])
        return {"deleted": deleted, "missing": missing}

    def compact(self, warp_layout: Optional[bool] = None) -> dict:
        """Merges all segments into one and drops deleted documents. ``warp_layout=True`` adds
        the stored layout WARP mode reads in place (as ``build(..., warp_layout=True)``; no
        retraining), ``False`` drops it, ``None`` keeps what the index has. Returns
        ``{"docs": kept, "dropped": removed}``."""
        docs, dropped = self._native.compact(warp_layout)
        return {"docs": docs, "dropped": dropped}

    def prepare_warp(self) -> int:
        """Prepares WARP mode now rather than at its first search: builds its in-memory copy of
        the tokens grouped by centroid, or for an index that stores it maps its pages (reading
        them from disk if not cached; skip this for an index larger than memory). Returns the
        bytes held in memory."""
        return self._native.prepare_warp()

    @property
    def stored_warp_bytes(self) -> int:
        """Bytes of the stored WARP layout's files (``build(..., warp_layout=True)``; 0 without
        one): what ``prepare_warp()`` maps, for deciding whether that fits in memory."""
        return self._native.stored_warp_bytes

    def reload(self) -> "Index":
        """Re-reads the index from disk, picking up changes other processes published;
        returns ``self``."""
        self._native.reload()
        return self

    def verify(self) -> None:
        """Checks every file's checksum; raises :class:`CorruptIndexError` naming a bad file."""
        self._native.verify()
