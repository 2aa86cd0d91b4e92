"""Text in: indexes built from strings with a real (tiny) checkpoint, searched by strings."""

import json
import subprocess

import pytest

from colbert_index import Index

TEXTS = [
    "the boundary layer of a flat plate in supersonic flow",
    "heat transfer to a blunt body at hypersonic speed",
    "buckling of thin cylindrical shells under axial compression",
    "vibration of a cantilever wing with a tip mass",
    "turbulent skin friction on a rough wall",
    "aerodynamic heating of re-entry vehicles",
]


@pytest.fixture(scope="module")
def text_index(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("text") / "index"
    return Index.build(path, texts=TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))], model=tiny_model, nbits=16)


def test_text_queries_use_the_recorded_model(text_index):
    info = text_index.info()
    assert info["encoder"]["dim"] == text_index.dim == 128
    hits = text_index.search("buckling of cylindrical shells", k=3)
    assert len(hits) == 3 and hits[0][0] == "t2"
    batch = text_index.search(["buckling of cylindrical shells", "hypersonic heat transfer"], k=2)
    assert batch[0] == hits[:2]
    r = text_index.rerank("hypersonic heat transfer", ["t0", "t1", "t9"], k=5)
    assert r.missing == ["t9"] and {h[0] for h in r} == {"t0", "t1"}


def test_command_line_answers_the_same_on_a_python_text_index(cli, text_index):
    out = subprocess.run(
        [cli, "search", "--index", text_index.path, "--query", "turbulent friction on rough walls", "-k", "3", "--json"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    from_cli = [r["docid"] for r in json.loads(out.splitlines()[0])["results"]]
    assert [h[0] for h in text_index.search("turbulent friction on rough walls", k=3)] == from_cli


def test_collection_file_builds_with_its_ids_and_skips_empty_documents(tmp_path, tiny_model):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("a\tthe flat plate boundary layer\nb\t \nc\tshell buckling under compression\n")
    index = Index.build(tmp_path / "c", collection=tsv, model=tiny_model)
    assert len(index) == 2
    assert index.search("shell buckling", k=1)[0][0] == "c"


def test_text_needs_a_model_and_rejects_empty_texts(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="needs model="):
        Index.build(tmp_path / "x", texts=TEXTS)
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        Index.build(tmp_path / "x", texts=["fine", "  "], model=tiny_model)
    with pytest.raises(FileNotFoundError):
        Index.build(tmp_path / "x", collection=tmp_path / "missing.tsv", model=tiny_model)


def test_texts_are_added_with_the_recorded_model(tmp_path, tiny_model):
    index = Index.build(tmp_path / "a", texts=TEXTS[:3], ids=["t0", "t1", "t2"], model=tiny_model, nbits=16)
    assert index.add(texts=TEXTS[3:], ids=["t3", "t4", "t5"]) == {"added": 3, "replaced": []}
    full = Index.build(tmp_path / "b", texts=TEXTS, ids=[f"t{i}" for i in range(6)], model=tiny_model, nbits=16)
    query = "vibration of a cantilever wing"
    added, fresh = index.search(query, k=6), full.search(query, k=6)
    assert [h[0] for h in added] == [h[0] for h in fresh]
    assert all(abs(a[1] - b[1]) < 1e-3 for a, b in zip(added, fresh))
    with pytest.raises(ValueError, match="empty"):
        index.add(texts=[""], ids=["t9"])


def test_text_build_reports_encoding_progress(tmp_path, tiny_model):
    calls = []
    Index.build(tmp_path / "p", texts=TEXTS, model=tiny_model, nbits=16, progress=lambda *a: calls.append(a))
    assert calls[0] == ("encoding", 0, len(TEXTS)) and ("encoding", len(TEXTS), len(TEXTS)) in calls
    assert calls[-1][0] == "writing" and calls[-1][1] == calls[-1][2]
