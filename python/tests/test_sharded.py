"""Sharding on Ray: a sharded collection answers as one index over the same documents."""

import json
import shutil
import socket
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='needs ray: pip install "ray[serve]" (tools/python-test.sh installs it)')

from colbert_index import Index  # noqa: E402
from colbert_index.sharded import (  # noqa: E402
    ShardedIndex,
    build_shards,
    merge_hits,
    read_shards,
    serve_app,
    shard_of,
)
from conftest import clustered_docs, query_near  # noqa: E402

N_SHARDS = 3


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(n_docs=240, dim=32, seed=5)
    return docs, [f"doc-{i}" for i in range(len(docs))]


@pytest.fixture(scope="module")
def collection(tmp_path_factory, corpus):
    """The same documents as one exact index and as three exact shards."""
    docs, ids = corpus
    root = tmp_path_factory.mktemp("sharded")
    whole = Index.build(root / "whole", documents=docs, ids=ids, nbits=16)
    paths = build_shards(root / "shards", N_SHARDS, documents=docs, ids=ids, nbits=16)
    return root, whole, paths


def close(a, b):
    """Two hit lists name the same documents in the same order with the same scores (to f32)."""
    assert [h[0] for h in a] == [h[0] for h in b]
    np.testing.assert_allclose([h[1] for h in a], [h[1] for h in b], rtol=1e-6, atol=1e-6)


def test_ids_hash_to_stable_shards_and_the_manifest_lists_them(collection, corpus):
    root, _, paths = collection
    _, ids = corpus
    assert read_shards(root / "shards") == paths
    # The hash is fixed (BLAKE2b), not Python's per-process one: these values never change.
    assert [shard_of(f"doc-{i}", 3) for i in range(8)] == [1, 1, 2, 2, 2, 1, 2, 1]
    assert shard_of("doc-0", 1) == 0
    sizes = [len(Index.open(p)) for p in paths]
    assert sum(sizes) == len(ids) and all(s > 0 for s in sizes)
    for s, path in enumerate(paths):
        index = Index.open(path)
        mine = [i for i in ids if shard_of(i, N_SHARDS) == s]
        assert len(index) == len(mine)
        assert index.rerank(np.ones((2, 32), np.float32), mine, k=1).missing == []
    with pytest.raises(FileExistsError):
        build_shards(root / "shards", 2, documents=corpus[0][:3], ids=corpus[1][:3])
    bad = root / "bad"
    bad.mkdir()
    (bad / "shards.json").write_text(json.dumps({"format": 1, "partition": "blake2b-64-mod-n", "shards": ["../x"]}))
    with pytest.raises(ValueError, match="shards.json"):
        read_shards(bad)
    with pytest.raises(ValueError, match="empty"):
        build_shards(root / "too-many", 50, documents=corpus[0][:3], ids=corpus[1][:3])


def test_merge_orders_by_score_then_id():
    assert merge_hits([[("b", 2.0), ("a", 1.0)], [("a2", 2.0), ("c", 0.5)]], 3) == [
        ("a2", 2.0),
        ("b", 2.0),
        ("a", 1.0),
    ]


def test_search_and_rerank_equal_one_index(cluster, collection, corpus):
    _, whole, paths = collection
    docs, ids = corpus
    sharded = ShardedIndex.open(collection[0] / "shards", actor_options={"num_cpus": 0.5})
    try:
        assert len(sharded) == len(docs) and sharded.dim == 32
        queries = [query_near(docs[t], seed=t) for t in (3, 77, 150, 201)]
        for q in queries:
            close(sharded.search(q, k=7), whole.search(q, k=7))
        for got, want in zip(sharded.search(queries, k=5), whole.search(queries, k=5)):
            close(got, want)
        ids_np, scores_np = sharded.search(queries[0], k=4, as_numpy=True)
        close(list(zip(ids_np, scores_np)), whole.search(queries[0], k=4))
        candidates = ["doc-5", "nope", "doc-90", "doc-5", "doc-200", "doc-13", "also-nope"]
        got, want = sharded.rerank(queries[0], candidates, k=3), whole.rerank(queries[0], candidates, k=3)
        close(got.hits, want.hits)
        assert got.missing == want.missing == ["nope", "also-nope"]
        # Opened from a list of directories: searches the same, refuses updates.
        listed = ShardedIndex.open(paths, actor_options=[{"num_cpus": 0.5}] * N_SHARDS)
        close(listed.search(queries[1], k=7), whole.search(queries[1], k=7))
        with pytest.raises(ValueError, match="build_shards"):
            listed.delete(["doc-1"])
        listed.close()
        # More CPUs asked than the cluster has: a clear error, not a hang.
        with pytest.raises(TimeoutError, match="resources"):
            ShardedIndex.open(paths, actor_options={"num_cpus": 8}, start_timeout=3)
    finally:
        sharded.close()


def test_updates_go_to_the_shard_each_id_hashes_to(cluster, tmp_path, corpus):
    docs, ids = corpus
    whole = Index.build(tmp_path / "whole", documents=docs[:200], ids=ids[:200], nbits=16)
    build_shards(tmp_path / "shards", N_SHARDS, documents=docs[:200], ids=ids[:200], nbits=16)
    sharded = ShardedIndex.open(tmp_path / "shards", actor_options={"num_cpus": 1})
    try:
        new_ids = [f"new-{i}" for i in range(40)]
        for target in (whole, sharded):
            target.add(documents=docs[200:], ids=new_ids)
            target.add(documents=docs[:2], ids=["doc-7", "new-3"], replace=True)
            out = target.delete(["doc-11", "new-9", "never-there"])
            assert sorted(out["deleted"]) == ["doc-11", "new-9"] and out["missing"] == ["never-there"]
        assert len(sharded) == len(whole) == 238
        for t in (0, 1, 7, 11, 120, 205, 239):
            q = query_near(docs[t], seed=t)
            close(sharded.search(q, k=8), whole.search(q, k=8))
        for p in read_shards(tmp_path / "shards"):
            held = Index.open(p)
            s = read_shards(tmp_path / "shards").index(p)
            live = [i for i in ids[:200] + new_ids if i not in ("doc-11", "new-9")]
            assert held.rerank(docs[0], live, k=1).missing == [i for i in live if shard_of(i, N_SHARDS) != s]
        before = sharded.search(query_near(docs[5], seed=5), k=8)
        assert sharded.compact()["dropped"] >= 2
        sharded.reload()
        close(sharded.search(query_near(docs[5], seed=5), k=8), before)
        sharded.verify()
    finally:
        sharded.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_answers_as_the_library(cluster, collection, corpus, tmp_path):
    requests = pytest.importorskip("requests")
    from ray import serve

    root, whole, _ = collection
    docs, _ = corpus
    served = tmp_path / "shards"
    shutil.copytree(root / "shards", served)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        small = {"ray_actor_options": {"num_cpus": 0.25}}
        app = serve_app(served, shard_options=small, router_options=small, max_documents=50, reload_secs=0.5)
        serve.run(app, route_prefix="/colbert")
        url = f"http://127.0.0.1:{port}/colbert"
        q = query_near(docs[42], seed=42)
        health = requests.get(f"{url}/health", timeout=30).json()
        assert health == {"status": "ok", "shards": N_SHARDS, "documents": len(docs)}
        found = requests.post(f"{url}/search", json={"query_embeddings": q.tolist(), "k": 6}, timeout=30)
        assert found.status_code == 200
        close([(h["id"], h["score"]) for h in found.json()["results"]], whole.search(q, k=6))
        body = {"query_embeddings": q.tolist(), "documents": [{"id": "doc-42"}, {"id": "zzz"}, {"id": "doc-8"}]}
        reranked = requests.post(f"{url}/rerank", json={**body, "top_n": 2}, timeout=30).json()
        want = whole.rerank(q, ["doc-42", "zzz", "doc-8"], k=2)
        assert [r["index"] for r in reranked["results"]] == [{"doc-42": 0, "doc-8": 2}[h[0]] for h in want.hits]
        assert reranked["missing"] == ["zzz"]
        for bad in ({"k": 3}, {"query_embeddings": q.tolist(), "k": 51}, {"query_embeddings": "x"}):
            answer = requests.post(f"{url}/search", json=bad, timeout=30)
            assert answer.status_code == 400 and answer.json()["error"], answer.text
        assert requests.post(f"{url}/rerank", json={"query_embeddings": q.tolist(), "documents": ["text"]}, timeout=30).status_code == 400
        assert requests.get(f"{url}/nowhere", timeout=30).status_code == 404
        # A document added to its shard by another handle is served after the next reload.
        Index.open(served / f"shard-{shard_of('fresh', N_SHARDS):03d}").add(documents=[docs[42]], ids=["fresh"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            hits = requests.post(f"{url}/search", json={"query_embeddings": q.tolist(), "k": 2}, timeout=30).json()
            if "fresh" in [h["id"] for h in hits["results"]]:
                break
            time.sleep(0.2)
        assert sorted(h["id"] for h in hits["results"]) == ["doc-42", "fresh"], hits
    finally:
        serve.shutdown()
