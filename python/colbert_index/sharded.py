"""One collection split across several indexes (shards), searched together on a Ray cluster.

When one machine cannot hold or search a collection fast enough, split it into shards by a
stable hash of each document's id, build one index per shard, and let Ray place one actor per
shard on the cluster's nodes::

    import ray
    from colbert_index.sharded import ShardedIndex, build_shards

    build_shards("corpus", n_shards=4, documents=arrays, ids=ids, nbits=2)   # corpus/shard-000 ...
    ray.init()                                   # or ray.init(address="auto") on a cluster
    index = ShardedIndex.open("corpus")          # one actor per shard
    index.search(query, k=10)                    # every shard's top k, merged
    index.rerank(query, candidate_ids, k=10)     # each id scored by the shard that holds it

A query goes to every shard; each returns its best ``k`` and the lists are merged by score (ties
by id), as one index over all the documents would order them. Scores of shards are comparable:
each is MaxSim against the document's own tokens (from that shard's compression, or exact with
``nbits=16``). ``add`` and ``delete`` go to the shard an id hashes to, so an id lives in exactly
one shard and ``replace=True`` works as on one index.

Every shard's directory must be readable where its actor runs: a shared filesystem, or pin each
shard to the node that holds it with ``actor_options`` (a list, one dict per shard, e.g. Ray's
``scheduling_strategy``). :func:`serve_app` puts the same behind Ray Serve's HTTP proxy, with the
JSON shapes of ``colbert-index serve`` (``POST /search``, Cohere-style ``POST /rerank``,
``GET /health``).

Needs ``pip install "ray[serve]"`` (imported on first use, not by ``import colbert_index``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import Index, Reranked, _as_ids, _as_query, _as_texts, _numpy_hits, _queries, _rows_and_lens

__all__ = ["ShardedIndex", "build_shards", "read_shards", "serve_app", "shard_of", "SHARDS_FILE"]

#: The file in a sharded collection's directory that lists its shards.
SHARDS_FILE = "shards.json"
_PARTITION = "blake2b-64-mod-n"
# Queries up to this many bytes travel inline with each shard's call (Ray inlines arguments up
# to 100 KiB); larger batches go once into the object store.
_INLINE_BYTES = 64 << 10

Hit = Tuple[str, float]
PathLike = Union[str, "os.PathLike[str]"]


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard a document id belongs to: the first 8 bytes of its UTF-8 BLAKE2b digest, as a
    little-endian integer, modulo ``n_shards`` (the same in every process and Python version)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def _import_ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('colbert_index.sharded needs Ray: pip install "ray[serve]"') from e
    return ray


# ---------------------------------------------------------------------------------- building
def build_shards(
    root: PathLike,
    n_shards: int,
    embeddings: Any = None,
    doclens: Any = None,
    *,
    documents: Optional[Sequence[Any]] = None,
    texts: Optional[Sequence[str]] = None,
    ids: Optional[Iterable[Any]] = None,
    **build_options: Any,
) -> List[str]:
    """Splits a collection into ``n_shards`` by :func:`shard_of` of each id and builds one index
    per shard under ``root`` (``shard-000``, ``shard-001``, ...), then writes ``root/shards.json``
    listing them. Documents come as for :meth:`Index.build` (token embeddings, or ``texts`` with
    ``model=``); ``ids`` default to ``"0"``, ``"1"``, ...; every other keyword (``nbits``,
    ``warp_layout``, ``store_f16``, ``model``, ...) is passed to each shard's build. ``root``
    must not exist or be empty. Returns the shard directories.

    Shards are built one after another on this machine (each build uses every core); a shard
    whose documents all hashed elsewhere is an error (use fewer shards)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    root = os.fspath(root)
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise FileExistsError(f"{root}: exists and is not an empty directory")
    key, items, id_list, parts = _partition(embeddings, doclens, documents, texts, ids, n_shards)
    n = len(items)
    empty = [s for s, p in enumerate(parts) if not p]
    if empty:
        raise ValueError(f"{n} documents leave shard {empty[0]} of {n_shards} empty; use fewer shards")
    created_root = not os.path.exists(root)
    os.makedirs(root, exist_ok=True)
    names = [f"shard-{s:03d}" for s in range(n_shards)]
    built: List[str] = []
    try:
        for name, part in zip(names, parts):
            path = os.path.join(root, name)
            shard = {key: [items[i] for i in part], "ids": [id_list[i] for i in part]}
            Index.build(path, **shard, **build_options)
            built.append(path)
        _write_manifest(root, names)
    except BaseException:
        # Nothing half-built is left behind: the shards this call wrote go, and the directory
        # if this call made it.
        for path in built:
            shutil.rmtree(path, ignore_errors=True)
        if created_root:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return [os.path.join(root, name) for name in names]


def _partition(
    embeddings: Any, doclens: Any, documents: Any, texts: Any, ids: Any, n_shards: int
) -> Tuple[str, List[Any], List[str], List[List[int]]]:
    """The documents given as for :meth:`Index.build` split by :func:`shard_of` of their ids
    (default ``"0"``, ``"1"``, ...): the keyword they go to :meth:`Index.build` or
    :meth:`Index.add` under (``texts`` or ``documents``), the documents (per-document views of
    the rows), the ids, and per shard the positions of its documents."""
    if texts is not None:
        if embeddings is not None or doclens is not None or documents is not None:
            raise ValueError("give either texts= or embeddings, not both")
        key, items = "texts", list(_as_texts(texts))
    else:
        rows, lens = _rows_and_lens(embeddings, doclens, documents)
        key, items = "documents", np.split(rows, np.cumsum(lens)[:-1])
    id_list = _as_ids(ids, len(items)) or [str(i) for i in range(len(items))]
    parts: List[List[int]] = [[] for _ in range(n_shards)]
    for i, doc_id in enumerate(id_list):
        parts[shard_of(doc_id, n_shards)].append(i)
    return key, items, id_list, parts


def _write_manifest(root: str, names: List[str]) -> None:
    """Writes ``shards.json`` atomically: a temporary file, fsynced, renamed, directory fsynced."""
    body = json.dumps({"format": 1, "partition": _PARTITION, "shards": names}, indent=2) + "\n"
    path = os.path.join(root, SHARDS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_shards(root: PathLike) -> List[str]:
    """The shard directories ``root/shards.json`` lists (written by :func:`build_shards`), in
    shard order. Raises ValueError naming the file if it is malformed."""
    path = os.path.join(os.fspath(root), SHARDS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != 1:
        raise ValueError(f"{path}: unsupported format (expected a JSON object with \"format\": 1)")
    names = meta.get("shards")
    if meta.get("partition") != _PARTITION:
        raise ValueError(f"{path}: unknown partition {meta.get('partition')!r} (expected {_PARTITION!r})")
    if not isinstance(names, list) or not names or not all(isinstance(s, str) and s for s in names):
        raise ValueError(f"{path}: 'shards' must be a non-empty list of directory names")
    for s in names:
        if os.path.isabs(s) or ".." in s.replace("\\", "/").split("/"):
            raise ValueError(f"{path}: shard {s!r} is not a directory inside {root}")
    return [os.path.join(os.fspath(root), s) for s in names]


# ---------------------------------------------------------------------------------- merging
def merge_hits(lists: Iterable[List[Hit]], k: int) -> List[Hit]:
    """The best ``k`` of several shards' hit lists, best first, ties by id (as one index)."""
    merged = [h for hits in lists for h in hits]
    merged.sort(key=lambda h: (-h[1], h[0]))
    return merged[:k]


def merge_reranked(candidates: List[str], answers: List[Tuple[List[Hit], List[str]]], k: int) -> Reranked:
    """Merges every shard's rerank of the same candidates: the best ``k`` hits, and as missing
    the candidates no shard holds (in the order given, each once)."""
    hits = merge_hits((h for h, _ in answers), k)
    missing_everywhere = set(answers[0][1]) if answers else set(candidates)
    for _, missing in answers[1:]:
        missing_everywhere &= set(missing)
    seen = set()
    missing = []
    for c in candidates:
        if c in missing_everywhere and c not in seen:
            seen.add(c)
            missing.append(c)
    return Reranked(hits, missing)


def _search_knobs(**knobs: Any) -> Dict[str, Any]:
    return {name: value for name, value in knobs.items() if value is not None}


def _shard_plan(
    shards: Union[PathLike, Sequence[PathLike]],
    options: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]],
    what: str,
) -> Tuple[List[str], bool, List[Dict[str, Any]]]:
    """The shard directories (from ``shards.json`` when ``shards`` is one directory: then
    partitioned by :func:`shard_of`), and each shard's options (one dict for all, or one each)."""
    if isinstance(shards, (str, os.PathLike)):
        paths, partitioned = read_shards(shards), True
    else:
        paths, partitioned = [os.fspath(p) for p in shards], False
        if not paths:
            raise ValueError("shards: no index directories given")
    if options is None or isinstance(options, dict):
        per_shard = [dict(options or {}) for _ in paths]
    else:
        per_shard = [dict(o) for o in options]
        if len(per_shard) != len(paths):
            raise ValueError(f"{what}: {len(per_shard)} dicts for {len(paths)} shards")
    return paths, partitioned, per_shard


# ---------------------------------------------------------------------------------- one shard
class _Shard:
    """What runs in each shard's actor (or Serve replica): one open :class:`Index`, reopened at
    its latest published state every ``reload_secs`` seconds when that is given (a failed
    reload keeps the current state)."""

    def __init__(self, path: str, reload_secs: float = 0.0):
        self.path = path
        self.index = Index.open(path)
        if reload_secs > 0:
            threading.Thread(target=self._reload_every, args=(reload_secs,), daemon=True).start()

    def _reload_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - a file being replaced: try again next time
                pass

    def describe(self) -> Dict[str, Any]:
        return {"path": self.path, "dim": self.index.dim, "documents": len(self.index)}

    def search(self, queries: List[Any], k: int, knobs: Dict[str, Any]) -> List[List[Hit]]:
        return self.index.search(queries, k, **knobs)

    def rerank(self, query: Any, ids: List[str], k: int) -> Tuple[List[Hit], List[str]]:
        answer = self.index.rerank(query, ids, k)
        return answer.hits, answer.missing

    def add(self, options: Dict[str, Any]) -> dict:
        return self.index.add(**options)

    def delete(self, ids: List[str]) -> dict:
        return self.index.delete(ids)

    def compact(self, warp_layout: Optional[bool]) -> dict:
        return self.index.compact(warp_layout)

    def reload(self) -> int:
        self.index = self.index.reload()
        return len(self.index)

    def verify(self) -> None:
        self.index.verify()


# ---------------------------------------------------------------------------------- the client
class ShardedIndex:
    """A collection's shards, each open in its own Ray actor. Safe to share between threads; the
    actors live until :meth:`close` (or the driver exits)."""

    def __init__(self, actors: List[Any], paths: List[str], partitioned: bool, dim: int):
        self._ray = _import_ray()
        self._actors = actors
        self.paths = paths
        self.partitioned = partitioned
        self.dim = dim

    @classmethod
    def open(
        cls,
        shards: Union[PathLike, Sequence[PathLike]],
        *,
        actor_options: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
        max_concurrency: int = 4,
        start_timeout: float = 300.0,
    ) -> "ShardedIndex":
        """Starts one actor per shard and opens its index there. ``shards`` is a directory
        written by :func:`build_shards` (its ``shards.json``), or a list of index directories
        (searched and reranked together; ``add`` and ``delete`` then need ids partitioned by
        :func:`shard_of` in list order, which only :func:`build_shards` guarantees, so they are
        refused). ``actor_options`` go to Ray's ``.options()`` for every actor, or one dict per
        shard (e.g. ``num_cpus``, ``resources``, ``scheduling_strategy``); each actor answers
        up to ``max_concurrency`` calls at once on threads (the engine releases the GIL). Ray is
        started with its defaults if it is not running. An actor the cluster cannot place (say,
        more ``num_cpus`` asked than free) would wait forever: after ``start_timeout`` seconds
        the actors are stopped and TimeoutError names the resources asked for."""
        ray = _import_ray()
        paths, partitioned, per_shard = _shard_plan(shards, actor_options, "actor_options")
        remote = ray.remote(_Shard)
        actors = [
            remote.options(max_concurrency=max_concurrency, **opts).remote(os.path.abspath(p))
            for p, opts in zip(paths, per_shard)
        ]
        try:
            described = ray.get([a.describe.remote() for a in actors], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            for a in actors:
                ray.kill(a)
            raise TimeoutError(
                f"the {len(actors)} shard actors did not all start within {start_timeout:.0f} s: does the "
                f"cluster have the resources asked for (actor_options {per_shard[0]!r}, one per shard)?"
            ) from None
        except Exception:
            for a in actors:
                ray.kill(a)
            raise
        dims = {d["dim"] for d in described}
        if len(dims) != 1:
            for a in actors:
                ray.kill(a)
            shown = ", ".join(f"{d['path']}: {d['dim']}" for d in described)
            raise ValueError(f"shards of different dimensions ({shown})")
        return cls(actors, paths, partitioned, dims.pop())

    def __len__(self) -> int:
        return sum(d["documents"] for d in self._gather("describe"))

    def __repr__(self) -> str:
        return f"ShardedIndex({len(self.paths)} shards, dim {self.dim})"

    def _gather(self, method: str, *args: Any) -> List[Any]:
        ray = self._ray
        return ray.get([getattr(a, method).remote(*args) for a in self._actors])

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
        """The ``k`` best documents of all shards for one query or a batch, as
        :meth:`Index.search` (same arguments, same result shapes): every shard returns its best
        ``k`` per query and the lists are merged by score, ties by id."""
        normalised, single = _queries(queries)
        knobs = _search_knobs(
            ncells=ncells, threshold=threshold, ndocs=ndocs, nprobe=nprobe, warp_rescore=warp_rescore
        )
        knobs.update(exhaustive=bool(exhaustive), mode=mode)
        # A large batch goes once into the object store, read by every shard; small queries
        # travel inline with each call (cheaper than a store round trip).
        size = sum(q.nbytes if isinstance(q, np.ndarray) else len(q) for q in normalised)
        batch = self._ray.put(normalised) if size > _INLINE_BYTES else normalised
        per_shard = self._gather("search", batch, int(k), knobs)
        merged = [merge_hits((shard[q] for shard in per_shard), int(k)) for q in range(len(normalised))]
        if as_numpy:
            merged = [_numpy_hits(hits) for hits in merged]
        return merged[0] if single else merged

    def rerank(self, query: Any, candidate_ids: Iterable[Any], k: int = 10) -> Reranked:
        """Scores exactly the documents named by ``candidate_ids`` against ``query`` (an array
        or a string) on the shards that hold them and returns the best ``k``; ids no shard holds
        are in ``missing``. Every shard sees the whole list (each scores the ids it holds)."""
        ids = _as_ids(candidate_ids, None) or []
        if not isinstance(query, str):
            query = _as_query(query, "query")
        return merge_reranked(ids, self._gather("rerank", query, ids, int(k)), int(k))

    def _need_partition(self, what: str) -> None:
        if not self.partitioned:
            raise ValueError(
                f"{what} needs a sharded collection written by build_shards (ids partitioned by "
                "shard_of); this ShardedIndex was opened from a list of directories"
            )

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
        """Adds documents, each to the shard its id hashes to (as :meth:`Index.add`, per shard:
        a new segment there). Returns ``{"added": n, "replaced": [ids]}`` over all shards. The
        shards commit one after another: if one fails, the shards before it keep their
        documents (add again with ``replace=True``)."""
        self._need_partition("add")
        if ids is None:
            raise ValueError("ids: add needs one id per document (it decides the shard)")
        key, items, id_list, parts = _partition(embeddings, doclens, documents, texts, ids, len(self._actors))
        added, replaced = 0, []
        for actor, part in zip(self._actors, parts):
            if not part:
                continue
            options: Dict[str, Any] = {"ids": [id_list[i] for i in part], "replace": bool(replace)}
            options[key] = [items[i] for i in part]
            out = self._ray.get(actor.add.remote(options))
            added += out["added"]
            replaced.extend(out["replaced"])
        return {"added": added, "replaced": replaced}

    def delete(self, ids: Iterable[Any]) -> dict:
        """Deletes documents by id, each on the shard it hashes to. Returns ``{"deleted": [ids],
        "missing": [ids no shard held]}``."""
        self._need_partition("delete")
        id_list = _as_ids(ids, None) or []
        parts: List[List[str]] = [[] for _ in self._actors]
        for doc_id in id_list:
            parts[shard_of(doc_id, len(self._actors))].append(doc_id)
        ray = self._ray
        outs = ray.get([a.delete.remote(p) for a, p in zip(self._actors, parts) if p])
        return {
            "deleted": [d for o in outs for d in o["deleted"]],
            "missing": [m for o in outs for m in o["missing"]],
        }

    def compact(self, warp_layout: Optional[bool] = None) -> dict:
        """Compacts every shard (:meth:`Index.compact`); returns the summed counts."""
        outs = self._gather("compact", warp_layout)
        return {"docs": sum(o["docs"] for o in outs), "dropped": sum(o["dropped"] for o in outs)}

    def reload(self) -> "ShardedIndex":
        """Has every shard's actor reopen its index at its latest published state (updates made
        by other processes); returns ``self``."""
        self._gather("reload")
        return self

    def verify(self) -> None:
        """Checks every shard's files (:meth:`Index.verify`); raises the first problem."""
        self._gather("verify")

    def close(self) -> None:
        """Stops the shards' actors."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []


# ---------------------------------------------------------------------------------- Ray Serve
class _Router:
    """Ray Serve ingress over the shard deployments: the JSON of ``colbert-index serve``."""

    def __init__(self, max_documents: int, *shards: Any):
        self.shards = list(shards)
        self.max_documents = max_documents

    async def _gather(self, method: str, *args: Any) -> List[Any]:
        import asyncio

        return list(await asyncio.gather(*(getattr(s, method).remote(*args) for s in self.shards)))

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        def error(status: int, message: str) -> Any:
            return JSONResponse({"error": message}, status_code=status)

        path = request.url.path.rstrip("/") or "/"
        if path.endswith("/health") and request.method == "GET":
            described = await self._gather("describe")
            total = sum(d["documents"] for d in described)
            return JSONResponse({"status": "ok", "shards": len(described), "documents": total})
        if request.method != "POST" or not (path.endswith("/search") or path.endswith("/rerank")):
            return error(404, f"no endpoint {request.method} {path}: POST /search, POST /rerank, GET /health")
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            return error(400, f"the body is not valid JSON: {e}")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        try:
            query = _request_query(body)
            if path.endswith("/search"):
                return JSONResponse(await self._search(body, query))
            return JSONResponse(await self._rerank(body, query))
        except (ValueError, TypeError) as e:
            return error(400, str(e).splitlines()[0] if str(e) else type(e).__name__)

    async def _search(self, body: Dict[str, Any], query: Any) -> Dict[str, Any]:
        k = _count(body.get("k", 10), "k")
        if k > self.max_documents:
            raise ValueError(f"k = {k} is above the limit of {self.max_documents}")
        knobs = _search_knobs(
            ncells=body.get("ncells"),
            ndocs=body.get("ndocs"),
            threshold=body.get("centroid_score_threshold"),
            nprobe=body.get("nprobe"),
            warp_rescore=body.get("warp_rescore"),
            mode=body.get("mode"),
        )
        per_shard = await self._gather("search", [query], k, knobs)
        hits = merge_hits((shard[0] for shard in per_shard), k)
        return {"results": [{"id": i, "score": s} for i, s in hits]}

    async def _rerank(self, body: Dict[str, Any], query: Any) -> Dict[str, Any]:
        documents = body.get("documents")
        if not isinstance(documents, list):
            raise ValueError("documents must be a list of {\"id\": string}")
        if len(documents) > self.max_documents:
            raise ValueError(f"{len(documents)} documents are above the limit of {self.max_documents}")
        ids = []
        for i, d in enumerate(documents):
            if not (isinstance(d, dict) and isinstance(d.get("id"), str)):
                raise ValueError(f"documents[{i}] must be {{\"id\": string}} (a sharded index scores documents by id)")
            ids.append(d["id"])
        if not ids:
            return {"results": []}
        top_n = _count(body.get("top_n", len(ids)), "top_n")
        answers = await self._gather("rerank", query, ids, top_n)
        merged = merge_reranked(ids, answers, top_n)
        position = {}
        for i, doc_id in enumerate(ids):
            position.setdefault(doc_id, i)
        out: Dict[str, Any] = {
            "results": [{"index": position[i], "relevance_score": s} for i, s in merged.hits]
        }
        if merged.missing:
            out["missing"] = merged.missing
        return out


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _request_query(body: Dict[str, Any]) -> Any:
    text, embeddings = body.get("query"), body.get("query_embeddings")
    if (text is None) == (embeddings is None):
        raise ValueError("give exactly one of query (text) and query_embeddings ([[float]])")
    if text is not None:
        if not isinstance(text, str) or not text:
            raise ValueError("query must be a non-empty string")
        return text
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ValueError("query_embeddings must be a non-empty [tokens][dim] array of numbers")
    return array


def serve_app(
    shards: Union[PathLike, Sequence[PathLike]],
    *,
    shard_options: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
    router_options: Optional[Dict[str, Any]] = None,
    max_documents: int = 1000,
    reload_secs: float = 5.0,
) -> Any:
    """A Ray Serve application over a sharded collection: one deployment per shard (named
    ``colbert-shard-000``, ...; ``shard_options`` go to its ``.options()``, e.g.
    ``num_replicas`` or ``ray_actor_options``, one dict for all or one per shard) behind an
    ingress deployment ``colbert-router`` answering ``POST /search``, ``POST /rerank`` (by id)
    and ``GET /health`` in ``colbert-index serve``'s JSON. Run it with ``serve.run(app)``;
    ``max_documents`` bounds ``k`` and the documents of one rerank. Every replica reopens its
    shard at its latest published state every ``reload_secs`` seconds (0: never), so updates
    made with :class:`ShardedIndex` or :class:`Index` elsewhere are served without a restart."""
    ray = _import_ray()  # noqa: F841 - fails early with the install hint
    from ray import serve

    paths, _, per_shard = _shard_plan(shards, shard_options, "shard_options")
    shard = serve.deployment(_Shard)
    bound = [
        shard.options(name=f"colbert-shard-{i:03d}", **opts).bind(os.path.abspath(p), float(reload_secs))
        for i, (p, opts) in enumerate(zip(paths, per_shard))
    ]
    router = serve.deployment(_Router).options(name="colbert-router", **(router_options or {}))
    return router.bind(max_documents, *bound)
