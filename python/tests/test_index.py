"""The Python package against the engine's contracts and the command line."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import colbert_index
from colbert_index import Index
from conftest import clustered_docs, query_near, write_safetensors


@pytest.fixture(scope="module")
def docs():
    return clustered_docs()


@pytest.fixture(scope="module")
def ids(docs):
    return [f"doc-{i}" for i in range(len(docs))]


@pytest.fixture(scope="module")
def index(tmp_path_factory, docs, ids):
    return Index.build(tmp_path_factory.mktemp("ix") / "index", documents=docs, ids=ids)


def maxsim(q, d):
    return float((q @ d.T).max(axis=1).sum())


def test_search_finds_the_document_a_query_was_drawn_from(index, docs):
    assert len(index) == len(docs) and index.dim == 64
    for target in (3, 150, 599):
        hits = index.search(query_near(docs[target], seed=target), k=5)
        assert hits[0][0] == f"doc-{target}"
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_batches_give_the_single_query_results(index, docs):
    queries = [query_near(docs[i], seed=i) for i in (1, 2, 3)]
    singles = [index.search(q, k=4) for q in queries]
    assert index.search(queries, k=4) == singles
    assert index.search(np.stack(queries), k=4) == singles
    ids, scores = index.search(queries[0], k=4, as_numpy=True)
    assert list(ids) == [h[0] for h in singles[0]]
    assert scores.dtype == np.float32 and np.allclose(scores, [h[1] for h in singles[0]])


def test_exhaustive_search_scores_every_document(index, docs):
    q = query_near(docs[10], seed=10)
    pruned = index.search(q, k=10)
    full = index.search(q, k=10, exhaustive=True)
    assert full[0][0] == "doc-10"
    # The exhaustive scores bound the pruned ones: pruning only drops documents.
    assert full[0][1] >= pruned[0][1] - 1e-4


def test_warp_mode_finds_the_source_and_rejects_an_unknown_mode(index, docs):
    for target in (3, 150):
        q = query_near(docs[target], seed=target)
        hits = index.search(q, k=5, mode="warp")
        assert hits[0][0] == f"doc-{target}"
        # The rescored hits carry the scores PLAID mode gives the same documents.
        plaid = dict(index.search(q, k=50))
        for doc, score in hits:
            if doc in plaid:
                assert score == plaid[doc]
        assert index.search(q, k=5, mode="warp", nprobe=2, warp_rescore=0)[0][0] == f"doc-{target}"
    with pytest.raises(ValueError, match="mode"):
        index.search(query_near(docs[0], seed=0), k=5, mode="fast")


def test_a_stored_warp_layout_answers_as_the_in_memory_one(tmp_path, index, docs, ids):
    stored = Index.build(tmp_path / "warp", documents=docs, ids=ids, warp_layout=True)
    assert (tmp_path / "warp" / "warp_docs.u32").is_file()
    for target in (3, 150):
        q = query_near(docs[target], seed=target)
        for knobs in ({}, {"nprobe": 2, "warp_rescore": 0}):
            assert stored.search(q, k=5, mode="warp", **knobs) == index.search(q, k=5, mode="warp", **knobs)
            # The default mode runs WARP on an index that stores its layout, PLAID elsewhere.
            assert stored.search(q, k=5, **knobs) == stored.search(q, k=5, mode="warp", **knobs)
            assert index.search(q, k=5, **knobs) == index.search(q, k=5, mode="plaid", **knobs)
    with pytest.raises(ValueError, match="warp_layout"):
        Index.build(tmp_path / "f16", documents=docs, ids=ids, nbits=16, warp_layout=True)
    assert stored.prepare_warp() > 0
    assert stored.stored_warp_bytes > 0 and index.stored_warp_bytes == 0
    # compact adds or drops the layout; the answers stay the same.
    q = query_near(docs[3], seed=3)
    before = stored.search(q, k=5, mode="warp")
    stored.compact(warp_layout=False)
    assert not (tmp_path / "warp" / "warp_docs.u32").is_file()
    assert stored.search(q, k=5, mode="warp") == before
    stored.compact(warp_layout=True)
    assert (tmp_path / "warp" / "warp_docs.u32").is_file()
    assert stored.search(q, k=5, mode="warp") == before


def test_uncompressed_scores_are_exact_maxsim(tmp_path, docs, ids):
    index = Index.build(tmp_path / "exact", documents=docs, ids=ids, nbits=16)
    q = query_near(docs[42], seed=4)
    stored = [d.astype(np.float16).astype(np.float32) for d in docs]
    expected = sorted(((maxsim(q, d), ids[i]) for i, d in enumerate(stored)), key=lambda t: (-t[0], t[1]))[:5]
    got = index.search(q, k=5)
    assert [h[0] for h in got] == [e[1] for e in expected]
    assert np.allclose([h[1] for h in got], [e[0] for e in expected], atol=1e-4)


def test_rerank_scores_exactly_the_candidates_and_reports_missing(tmp_path, docs, ids):
    index = Index.build(tmp_path / "f16", documents=docs, ids=ids, store_f16=True)
    q = query_near(docs[5], seed=5)
    r = index.rerank(q, ["doc-9", "doc-5", "nope", "doc-5", "doc-100"], k=10)
    assert r.missing == ["nope"]
    assert sorted(h[0] for h in r) == ["doc-100", "doc-5", "doc-9"]
    assert r[0][0] == "doc-5" and len(r) == 3
    stored = {i: docs[int(i[4:])].astype(np.float16).astype(np.float32) for i in ("doc-9", "doc-5", "doc-100")}
    for doc_id, score in r.hits:
        assert abs(score - maxsim(q, stored[doc_id])) < 1e-3


def test_input_forms_build_the_same_index(tmp_path, docs, ids):
    flat = np.concatenate(docs)
    lens = [d.shape[0] for d in docs]
    a = Index.build(tmp_path / "a", documents=docs, ids=ids)
    b = Index.build(tmp_path / "b", embeddings=flat, doclens=lens, ids=ids)
    c = Index.build(tmp_path / "c", embeddings=flat.astype(np.float64), doclens=np.array(lens, dtype=np.int32), ids=ids)
    for name in sorted(os.listdir(a.path)):
        if name != "meta.json":
            for other in (b, c):
                with open(os.path.join(a.path, name), "rb") as x, open(os.path.join(other.path, name), "rb") as y:
                    assert x.read() == y.read(), name
    half = Index.build(tmp_path / "h", embeddings=flat.astype(np.float16), doclens=lens)
    assert half.search(query_near(docs[7], seed=7), k=1)[0][0] == "7"


def test_build_equals_the_command_line(tmp_path, cli, docs, ids):
    flat = np.concatenate(docs).astype(np.float16)
    lens = np.array([d.shape[0] for d in docs], dtype=np.int64)
    write_safetensors(tmp_path / "docs.safetensors", {"embeddings": flat, "doclens": lens})
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    subprocess.run(
        [cli, "build", "--embeddings", str(tmp_path / "docs.safetensors"), "--ids", str(tmp_path / "ids.txt"),
         "--index", str(tmp_path / "cli")],
        check=True, capture_output=True, timeout=300,
    )
    py = Index.build(tmp_path / "py", embeddings=flat, doclens=lens, ids=ids)
    files = sorted(os.listdir(py.path))
    assert files == sorted(os.listdir(tmp_path / "cli"))
    for name in files:
        if name != "meta.json":
            assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "py" / name).read_bytes(), name

    queries = np.stack([query_near(docs[i], seed=i) for i in (0, 77, 300)])
    write_safetensors(tmp_path / "q.safetensors", {"queries": queries})
    out = subprocess.run(
        [cli, "search", "--index", str(tmp_path / "py"), "--query-embeddings", str(tmp_path / "q.safetensors"),
         "-k", "5", "--json"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    from_cli = [[(r["docid"], r["score"]) for r in json.loads(line)["results"]] for line in out.splitlines()]
    # The command line's index, opened from Python, answers as the Python-built one.
    for answers in (py.search(queries, k=5), Index.open(tmp_path / "cli").search(queries, k=5)):
        assert [[h[0] for h in q] for q in answers] == [[h[0] for h in q] for q in from_cli]
        assert np.allclose([[h[1] for h in q] for q in answers], [[h[1] for h in q] for q in from_cli], atol=1e-4)


def test_threads_share_one_index(index, docs):
    queries = [query_near(docs[i], seed=i) for i in range(0, 600, 25)]
    expected = [index.search(q, k=5) for q in queries]
    results = {}

    def worker(t):
        results[t] = [index.search(q, k=5) for q in queries]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(results[t] == expected for t in range(8))


def test_updates_add_delete_replace_compact(tmp_path, docs, ids):
    index = Index.build(tmp_path / "u", documents=docs[:400], ids=ids[:400])
    other = Index.open(tmp_path / "u")
    q = query_near(docs[450], seed=450)
    assert index.search(q, k=1)[0][0] != "doc-450"
    assert index.add(documents=docs[400:], ids=ids[400:]) == {"added": 200, "replaced": []}
    assert index.search(q, k=1)[0][0] == "doc-450"
    with pytest.raises(colbert_index.DuplicateIdError, match="doc-450"):
        index.add(documents=[docs[0]], ids=["doc-450"])
    assert index.add(documents=[docs[0]], ids=["doc-450"], replace=True)["replaced"] == ["doc-450"]
    assert index.delete(["doc-3", "doc-3", "never"]) == {"deleted": ["doc-3"], "missing": ["never"]}
    assert index.rerank(q, ["doc-3"], k=1).missing == ["doc-3"]
    assert len(other) == 400 and len(other.reload()) == 599
    info = index.info()
    assert info["live_docs"] == 599 and len(info["segments"]) == 3
    assert index.compact() == {"docs": 599, "dropped": 2}
    assert len(index) == 599 and len(index.info()["segments"]) == 1
    assert index.search(query_near(docs[0], seed=0), k=1)[0][0] in ("doc-0", "doc-450")
    index.verify()


def test_bad_inputs_raise_clear_errors(tmp_path, index, docs):
    good = docs[:20]
    with pytest.raises(TypeError, match="int64"):
        Index.build(tmp_path / "x", documents=[np.ones((3, 64), dtype=np.int64)])
    with pytest.raises(ValueError, match="different dimensions"):
        Index.build(tmp_path / "x", documents=[np.ones((3, 64), "f4"), np.ones((3, 32), "f4")])
    with pytest.raises(ValueError, match="doclens add up to"):
        Index.build(tmp_path / "x", embeddings=np.concatenate(good), doclens=[1, 2, 3])
    with pytest.raises(ValueError, match="at least one token"):
        Index.build(tmp_path / "x", embeddings=np.ones((3, 64), "f4"), doclens=[3, 0])
    bad = [d.copy() for d in good]
    bad[7][2, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Index.build(tmp_path / "x", documents=bad, ids=[f"d{i}" for i in range(20)])
    with pytest.raises(ValueError, match="3 ids given for 20 documents"):
        Index.build(tmp_path / "x", documents=good, ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="duplicate document id `a`"):
        Index.build(tmp_path / "x", documents=good[:2], ids=["a", "a"])
    with pytest.raises(ValueError, match="nbits 3"):
        Index.build(tmp_path / "x", documents=good, nbits=3)
    with pytest.raises(ValueError, match="codec"):
        Index.build(tmp_path / "x", documents=good, codec="best")
    with pytest.raises(ValueError, match="multiple of 8"):
        Index.build(tmp_path / "x", documents=[np.ones((3, 12), "f4")])
    with pytest.raises(FileExistsError, match="already exists"):
        Index.build(index.path, documents=good)
    with pytest.raises(FileNotFoundError, match="missing index file"):
        Index.open(tmp_path / "nowhere")
    assert not os.path.exists(tmp_path / "x"), "a failed build left a directory behind"

    with pytest.raises(ValueError, match="dimension mismatch"):
        index.search(np.ones((4, 32), "f4"))
    with pytest.raises(ValueError, match="non-finite"):
        index.search(np.full((4, 64), np.inf, "f4"))
    with pytest.raises(ValueError, match="2-D"):
        index.search(np.ones(64, "f4"))
    with pytest.raises(TypeError, match="not a float"):
        index.search(np.ones((4, 64), dtype=np.int32))
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(docs[0], k=0)
    with pytest.raises(TypeError, match="ids"):
        index.rerank(docs[0], [1.5])
    with pytest.raises(ValueError, match="empty batch"):
        index.search([])


def test_corrupt_file_raises_naming_it(tmp_path, docs):
    index = Index.build(tmp_path / "c", documents=docs[:50])
    path = os.path.join(index.path, "residuals.u8")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(colbert_index.CorruptIndexError, match="residuals"):
        Index.open(tmp_path / "c").verify()


def test_build_reports_progress(tmp_path, docs, monkeypatch):
    calls = []
    Index.build(tmp_path / "p", documents=docs, progress=lambda *a: calls.append(a))
    stages = [c[0] for c in calls]
    assert stages.count("training") == 1 and stages[0] == "training"
    writing = [c for c in calls if c[0] == "writing"]
    total = sum(d.shape[0] for d in docs)
    assert writing[0][1] == 0 and writing[-1] == ("writing", total, total)
    assert [w[1] for w in writing] == sorted(w[1] for w in writing)

    def broken(*_):
        raise RuntimeError("a progress bar bug")

    # A failing callback does not fail the build: its exception goes to sys.unraisablehook.
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    index = Index.build(tmp_path / "q", documents=docs[:50], nbits=16, progress=broken)
    assert len(index) == 50
    assert seen and all(isinstance(e, RuntimeError) for e in seen)
