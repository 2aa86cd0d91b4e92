#!/usr/bin/env python3
"""numpy baseline for exhaustive MaxSim, the fast way.

One matrix product of the query against all document tokens at once (BLAS, all threads), then a
max per document (np.maximum.reduceat over the document boundaries) and a sum over query tokens.
Reads the same safetensors files as `colbert-index build/search`:
  --embeddings: `embeddings` [total_tokens, dim] (f16 or f32), `doclens` [n_docs]
  --queries:    `queries` [n_queries, query_len, dim]
Prints one JSON line: per-query latency percentiles (ms), QPS, and the top-10 of query 0.

Run it with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (see benches/README.md): on some
processors they pin an old OpenBLAS kernel and slow numpy down.
"""
import argparse
import json
import time

import numpy as np
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    docs = load_file(args.embeddings)
    # f32 is numpy's fast path: BLAS has no f16 GEMM, so converting once up front is "the fast way".
    emb = np.ascontiguousarray(docs["embeddings"].astype(np.float32))
    doclens = docs["doclens"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(doclens)[:-1]])
    queries = load_file(args.queries)["queries"].astype(np.float32)

    def search(q):
        sims = q @ emb.T  # [query_len, total_tokens]
        per_doc = np.maximum.reduceat(sims, starts, axis=1)  # [query_len, n_docs]
        scores = per_doc.sum(axis=0)
        top = np.argpartition(-scores, args.k)[: args.k]
        return top[np.argsort(-scores[top], kind="stable")], scores

    for q in queries[: args.warmup]:
        search(q)
    times = []
    t0 = time.perf_counter()
    for q in queries:
        s = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - s) * 1e3)
    total = time.perf_counter() - t0
    top, scores = search(queries[0])
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: i.get(k) for k in ("internal_api", "num_threads", "architecture")} for i in threadpool_info()]
    except ImportError:
        blas = "threadpoolctl not installed"
    print(
        json.dumps(
            {
                "engine": "numpy",
                "queries": len(queries),
                "p50_ms": float(np.percentile(times, 50)),
                "p95_ms": float(np.percentile(times, 95)),
                "qps": len(queries) / total,
                "top10_q0": [int(d) for d in top],
                "top10_q0_scores": [float(scores[d]) for d in top],
                "blas": blas,
            }
        )
    )


if __name__ == "__main__":
    main()
