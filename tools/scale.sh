#!/usr/bin/env bash
# The scale benchmark: for each size, writes a clustered synthetic collection (32 tokens per
# document, 128 dims, documents / 5 clusters: the family of docs/PLAID.md "Defaults at scale"),
# builds a default compressed index (nbits 2), benches it at 1 and all threads, and checks it
# against exact MaxSim on a sample of queries; then prints one Markdown table.
#
#   bash tools/scale.sh [DIR]        # DIR: scratch directory (default target/scale)
#
# Environment:
#   SIZES         token counts in millions (default "1 10"; "1 3 10 100" where disk and time
#                 allow: 100M tokens need about 26 GB for the corpus, 4 GB for the index, 26 GB
#                 for the exact one, and hours of CPU to build on 2 cores)
#   QUERIES       queries per size for `bench` (default 200)
#   EXACT_SAMPLE  queries checked against exact MaxSim (an uncompressed f16 index of the same
#                 embeddings, searched exhaustively); 0 skips it (default 20)
#   BUILD_FLAGS   extra `build` flags, e.g. "--warp-layout" (the default search mode then runs
#                 WARP mode at k <= 10; delete DIR/<N>m/index to rebuild an existing index)
#
# Columns: build wall time, its k-means training part and peak RSS (`/usr/bin/time -v`); index
# size; p50/p95 of one query at 1 thread and at all cores; batched QPS at all cores; recall@10
# against exhaustive search over the same compressed index (`bench`'s oracle) on every query,
# and against exact MaxSim on the sample. Files are kept in DIR and reused by later runs (delete
# DIR to start over); the binary is rebuilt first.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-target/scale}
SIZES=${SIZES:-"1 10"}
QUERIES=${QUERIES:-200}
EXACT_SAMPLE=${EXACT_SAMPLE:-20}
BUILD_FLAGS=${BUILD_FLAGS:-}
THREADS=$(nproc)
mkdir -p "$DIR"

cargo build --release --quiet
BIN=$PWD/target/release/colbert-index

# Runs a command under /usr/bin/time -v; its output and the measurements go to $1.time.
timed() {
    local out="$1"
    shift
    /usr/bin/time -v "$@" >"$out.time" 2>&1 || { tail -20 "$out.time" >&2; exit 1; }
}

for m in $SIZES; do
    docs=$((m * 31250))
    d="$DIR/${m}m"
    mkdir -p "$d"
    if [ ! -f "$d/corpus.safetensors" ]; then
        echo "== ${m}M tokens: synth ($docs documents)" >&2
        "$BIN" synth --out "$d/corpus.safetensors" --queries-out "$d/queries.safetensors" \
            --docs "$docs" --tokens-per-doc 32 --dim 128 --clusters $((docs / 5)) \
            --n-queries "$QUERIES" --overwrite 2>/dev/null
    fi
    if [ ! -f "$d/index/meta.json" ]; then
        echo "== ${m}M tokens: build" >&2
        # shellcheck disable=SC2086 # BUILD_FLAGS is a list of flags
        timed "$d/build" "$BIN" build --embeddings "$d/corpus.safetensors" --index "$d/index" --overwrite $BUILD_FLAGS
    fi
    echo "== ${m}M tokens: bench at 1 and $THREADS threads" >&2
    "$BIN" info --index "$d/index" --json >"$d/info.json"
    "$BIN" bench --index "$d/index" --query-embeddings "$d/queries.safetensors" \
        --threads "1,$THREADS" --json >"$d/bench.json" 2>"$d/bench.err"
    if [ "$EXACT_SAMPLE" -gt 0 ]; then
        # The first EXACT_SAMPLE queries, and both indexes' top 10 for them.
        python3 - "$d/queries.safetensors" "$d/sample.safetensors" "$EXACT_SAMPLE" <<'PY'
import json, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = open(src, "rb").read()
size = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + size])
name = next(k for k in head if k != "__metadata__")
shape = head[name]["shape"]
n = min(n, shape[0])
row = shape[1] * shape[2] * 2  # f16
start, _ = head[name]["data_offsets"]
body = raw[8 + size + start:8 + size + start + n * row]
out = {name: {"dtype": head[name]["dtype"], "shape": [n] + shape[1:], "data_offsets": [0, len(body)]}}
text = json.dumps(out).encode()
text += b" " * (-len(text) % 8)
open(dst, "wb").write(struct.pack("<Q", len(text)) + text + body)
PY
        if [ ! -f "$d/exact/meta.json" ]; then
            echo "== ${m}M tokens: exact index (f16, uncompressed)" >&2
            "$BIN" build --embeddings "$d/corpus.safetensors" --index "$d/exact" --nbits 16 \
                --overwrite >/dev/null 2>&1
        fi
        echo "== ${m}M tokens: exact MaxSim on $EXACT_SAMPLE queries" >&2
        "$BIN" search --index "$d/exact" --query-embeddings "$d/sample.safetensors" -k 10 >"$d/exact.run"
        "$BIN" search --index "$d/index" --query-embeddings "$d/sample.safetensors" -k 10 >"$d/plaid.run"
    fi
done

python3 - "$DIR" "$SIZES" "$THREADS" <<'PY'
import json, os, re, sys
from collections import defaultdict

root, sizes, threads = sys.argv[1], sys.argv[2].split(), sys.argv[3]

def timing(path):
    text = open(path).read() if os.path.exists(path) else ""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    train = re.search(r"training ([0-9.]+)s", text)
    secs = None
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return secs, train and float(train.group(1)), rss and int(rss.group(1)) / 1024

def top(path):
    runs = defaultdict(set)
    for line in open(path):
        qid, _, doc = line.split()[:3]
        runs[qid].add(doc)
    return runs

print(f"| tokens | centroids | build (training) | build peak RSS | size | p50 / p95, 1 thread "
      f"| p50 / p95, {threads} threads | QPS batched, {threads} threads | recall@10 vs oracle "
      f"| recall@10 vs exact MaxSim |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in sizes:
    d = os.path.join(root, f"{m}m")
    b = json.load(open(os.path.join(d, "bench.json")))
    info = json.load(open(os.path.join(d, "info.json")))
    wall, train, rss = timing(os.path.join(d, "build.time"))
    runs = {r["threads"]: r for r in b["runs"]}
    one, many = runs[1], runs[int(threads)]
    stage = lambda r, p: r["stages"]["search"][p]
    exact = "–"
    if os.path.exists(os.path.join(d, "exact.run")):
        want, got = top(os.path.join(d, "exact.run")), top(os.path.join(d, "plaid.run"))
        hits = sum(len(v & got.get(q, set())) for q, v in want.items())
        exact = f"{hits / max(1, sum(len(v) for v in want.values())):.4f} ({len(want)} queries)"
    build = f"{wall:.0f} s ({train:.0f} s)" if wall and train else "–"
    peak = f"{rss:.0f} MiB" if rss else "–"
    print(f"| {m}M | {info['n_centroids']} | {build} | {peak} | {info['index_bytes'] / 1e6:.0f} MB "
          f"| {stage(one, 'p50_ms'):.2f} / {stage(one, 'p95_ms'):.2f} ms "
          f"| {stage(many, 'p50_ms'):.2f} / {stage(many, 'p95_ms'):.2f} ms "
          f"| {many['qps_batched']:.0f} | {one['recall_at_k']:.4f} | {exact} |")
PY
