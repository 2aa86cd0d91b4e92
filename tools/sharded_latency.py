"""Latency of a sharded collection on Ray next to one index over the same documents.

usage: python tools/sharded_latency.py DOCS.st QUERIES.st WORKDIR [SHARDS] [ROUNDS] [TRUTH.run]

DOCS.st and QUERIES.st are `colbert-index synth` outputs (f16 or f32 `embeddings` with `doclens`;
`queries`). Builds, if WORKDIR lacks them, one index (`whole`) and SHARDS shards (`shards/`, by
`build_shards`), nbits 2, ids "0", "1", ...; starts a local Ray with one actor per shard; then
measures, alternating the two sides per round: the median latency of one query at a time, and
the throughput of the whole query set as one batch. Prints one JSON line per side and round,
and the overlap of the two sides' top 10 (each shard trains its own centroids, so the two
compressed searches need not agree exactly) and, given a TREC run of the exact top 10 (e.g.
`colbert-index search` over an `--nbits 16` index of the same documents), each side's recall@10
against it. Needs the package from a release build and ray.
"""

import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import ray

from colbert_index import Index
from colbert_index.sharded import ShardedIndex, build_shards


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    start = 8 + n
    dtypes = {"F16": np.float16, "F32": np.float32, "I64": np.int64, "U32": np.uint32}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        out[name] = np.memmap(path, dtype=dtypes[meta["dtype"]], mode="r", offset=start + lo, shape=tuple(meta["shape"]))
    return out


def main():
    docs_path, queries_path, work = sys.argv[1:4]
    n_shards = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    truth = {}
    if len(sys.argv) > 6:
        with open(sys.argv[6]) as f:
            for line in f:
                qid, _, doc, rank = line.split()[:4]
                if int(rank) <= 10:
                    truth.setdefault(int(qid), set()).add(doc)
    os.makedirs(work, exist_ok=True)
    whole_dir, shards_dir = os.path.join(work, "whole"), os.path.join(work, f"shards-{n_shards}")
    if not os.path.isdir(whole_dir) or not os.path.isdir(shards_dir):
        d = read_safetensors(docs_path)
        rows, lens = np.ascontiguousarray(d["embeddings"]), np.asarray(d["doclens"])
        ids = [str(i) for i in range(len(lens))]
        if not os.path.isdir(whole_dir):
            t = time.perf_counter()
            Index.build(whole_dir, embeddings=rows, doclens=lens, ids=ids)
            print(json.dumps({"built": "whole", "s": round(time.perf_counter() - t, 1)}), flush=True)
        t = time.perf_counter()
        build_shards(shards_dir, n_shards, embeddings=rows, doclens=lens, ids=ids)
        print(json.dumps({"built": f"{n_shards} shards", "s": round(time.perf_counter() - t, 1)}), flush=True)
    queries = [np.asarray(q, dtype=np.float32) for q in read_safetensors(queries_path)["queries"]]
    ray.init(include_dashboard=False, log_to_driver=False)
    whole = Index.open(whole_dir)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    sharded = ShardedIndex.open(shards_dir, actor_options={"num_cpus": cpus / n_shards})
    for q in queries[:20]:
        whole.search(q, k=10)
        sharded.search(q, k=10)
    overlap = statistics.mean(
        len({h[0] for h in whole.search(q, k=10)} & {h[0] for h in sharded.search(q, k=10)}) / 10 for q in queries
    )
    if truth:
        for name, target in (("one index", whole), (f"{n_shards} shards on Ray", sharded)):
            found = [len({h[0] for h in target.search(q, k=10)} & truth[i]) / 10 for i, q in enumerate(queries)]
            print(json.dumps({"side": name, "recall@10_vs_exact": round(statistics.mean(found), 4)}), flush=True)
    for r in range(rounds):
        for name, target in (("one index", whole), (f"{n_shards} shards on Ray", sharded)):
            times = []
            for q in queries:
                t = time.perf_counter()
                target.search(q, k=10)
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            target.search(queries, k=10)
            qps = len(queries) / (time.perf_counter() - t)
            print(json.dumps({"round": r, "side": name, "p50_ms": round(statistics.median(times) * 1e3, 3),
                              "batch_qps": round(qps, 1)}), flush=True)
    print(json.dumps({"top10_overlap": round(overlap, 4), "queries": len(queries), "cpus": cpus}))
    sharded.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
