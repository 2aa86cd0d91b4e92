"""The HTTP server, driven over loopback by a Python client as a Cohere/Jina client would."""

import re
import signal
import subprocess

import cohere
import numpy as np
import pytest
import requests

from colbert_index import Index
from test_text import TEXTS


@pytest.fixture(scope="module")
def server(tmp_path_factory, cli, tiny_model):
    path = tmp_path_factory.mktemp("srv") / "index"
    Index.build(path, texts=TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))], model=tiny_model, nbits=16)
    proc = subprocess.Popen(
        [cli, "serve", "--index", str(path), "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        for _ in range(50):
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"listening on (http://[0-9.]+:\d+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "the server did not report its address"
        yield url, path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()


def test_health(server):
    url, _ = server
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_cohere_shaped_rerank_by_id_and_by_text(server):
    url, path = server
    body = {
        "query": "buckling of cylindrical shells",
        "documents": [{"id": "t0"}, {"id": "t2"}, "cylindrical shells buckle under compression"],
        "top_n": 2,
        "return_documents": True,
    }
    r = requests.post(f"{url}/rerank", json=body, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    scores = [res["relevance_score"] for res in results]
    assert scores == sorted(scores, reverse=True)
    # Indexed documents score as the Python package scores them.
    by_id = dict(Index.open(path).rerank(body["query"], ["t0", "t2"], k=2).hits)
    for res in results:
        if res["index"] < 2:
            assert abs(res["relevance_score"] - by_id[f"t{2 * res['index']}"]) < 1e-4


def test_search_matches_the_python_package(server):
    url, path = server
    r = requests.post(f"{url}/search", json={"query": "hypersonic heat transfer", "k": 3}, timeout=30)
    assert r.status_code == 200, r.text
    got = [(h["id"], h["score"]) for h in r.json()["results"]]
    expected = Index.open(path).search("hypersonic heat transfer", k=3)
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert np.allclose([g[1] for g in got], [e[1] for e in expected], atol=1e-4)


def test_bad_requests_get_json_errors(server):
    url, _ = server
    r = requests.post(f"{url}/rerank", json={"query": "", "documents": ["x"]}, timeout=10)
    assert 400 <= r.status_code < 500 and "error" in r.json()
    r = requests.post(f"{url}/search", data=b"{not json", headers={"content-type": "application/json"}, timeout=10)
    assert 400 <= r.status_code < 500


def test_cohere_sdk_works_by_changing_only_its_base_url(server):
    """Cohere's own Python client (v1 and v2 APIs), pointed at the server."""
    url, path = server
    docs = ["the boundary layer of a flat plate", "buckling of cylindrical shells", "aerodynamic heating"]
    v2 = cohere.ClientV2(api_key="unused", base_url=url).rerank(
        model="colbert", query="buckling of shells", documents=docs, top_n=2
    )
    v1 = cohere.Client(api_key="unused", base_url=url).rerank(
        model="colbert", query="buckling of shells", documents=docs, top_n=2, return_documents=True
    )
    assert [r.index for r in v2.results] == [r.index for r in v1.results] and len(v2.results) == 2
    assert v2.results[0].index == 1
    assert [r.relevance_score for r in v2.results] == [r.relevance_score for r in v1.results]
    assert v1.results[0].document.text == docs[1]


def test_jina_shaped_request_on_its_path(server):
    """Jina's rerank API: POST {base}/v1/rerank with model, query, documents, top_n."""
    url, _ = server
    body = {"model": "jina-reranker-v2-base-multilingual", "query": "aerodynamic heating",
            "documents": ["flat plate", "re-entry heating of vehicles"], "top_n": 1, "return_documents": True}
    r = requests.post(f"{url}/v1/rerank", json=body, timeout=30)
    assert r.status_code == 200, r.text
    (hit,) = r.json()["results"]
    assert set(hit) == {"index", "relevance_score", "document"} and hit["document"] == {"text": body["documents"][hit["index"]]}
