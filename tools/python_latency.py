"""Query latency and batched throughput of the Python package, the same loop as
examples/search_latency.rs (tools/python-overhead.sh runs both and compares).

usage: python tools/python_latency.py INDEX QUERIES.safetensors [ROUNDS] [K]
"""

import json
import struct
import sys
import time

import numpy as np

import colbert_index


def read_queries(path):
    """The `queries` tensor ([n, len, dim], f16 or f32) of a safetensors file, as float32."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        t = header["queries"]
        a, b = t["data_offsets"]
        f.seek(8 + n + a)
        dtype = {"F16": np.float16, "F32": np.float32}[t["dtype"]]
        return np.frombuffer(f.read(b - a), dtype=dtype).reshape(t["shape"]).astype(np.float32)


def main():
    index_dir, queries_path = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    k = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    index = colbert_index.Index.open(index_dir)
    queries = read_queries(queries_path)
    single = []
    for r in range(rounds + 1):
        for q in queries:
            start = time.perf_counter()
            index.search(q, k=k)
            if r > 0:
                single.append(time.perf_counter() - start)
    single.sort()
    best = float("inf")
    for _ in range(rounds + 1):
        start = time.perf_counter()
        index.search(queries, k=k)
        best = min(best, time.perf_counter() - start)
    print(json.dumps({
        "side": "python",
        "queries": len(queries),
        "p50_ms": round(single[len(single) // 2] * 1e3, 4),
        "batch_qps": round(len(queries) / best, 1),
    }))


if __name__ == "__main__":
    main()
