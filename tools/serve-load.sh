#!/usr/bin/env bash
# Load test of `colbert-index serve` with wrk (docs/SERVER.md "Load test").
#
#   bash tools/serve-load.sh [DOCS] [DURATION]     (defaults: 10000 documents, 10s per run)
#
# Builds a synthetic index (DOCS documents of 32 tokens, dim 128, nbits 2) with the release
# binary, serves it on a free loopback port, and runs wrk at 1, 8 and 64 connections against
# POST /search (k 10, 32-token query embeddings) and POST /rerank (the query's top 100 by id).
# Needs wrk and python3; wrk runs on the same machine as the server.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${1:-10000}
DUR=${2:-10s}
BIN=${BIN:-target/release/colbert-index}
[ -x "$BIN" ] || cargo build --release --bin colbert-index
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$BIN" synth --docs "$DOCS" --dim 128 --tokens-per-doc 32 --seed 7 --out "$work/docs.st" \
    --queries-out "$work/q.st" --n-queries 1 --query-len 32 >&2
"$BIN" build --embeddings "$work/docs.st" --index "$work/idx" --nbits 2 >&2
"$BIN" serve --index "$work/idx" --port 0 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do grep -q '^listening' "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log")

python3 - "$work" "$url" <<'PY'
import json, struct, sys, urllib.request
work, url = sys.argv[1], sys.argv[2]
raw = open(f"{work}/q.st", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
meta = json.loads(raw[8:8 + n])["queries"]
_, length, dim = meta["shape"]
start, end = meta["data_offsets"]
code = {"F32": "f", "F16": "e"}[meta["dtype"]]
vals = struct.unpack(f"<{length * dim}{code}", raw[8 + n + start:8 + n + end])
rows = [list(vals[i * dim:(i + 1) * dim]) for i in range(length)]
search = {"query_embeddings": rows, "k": 10}
open(f"{work}/search.json", "w").write(json.dumps(search))
req = urllib.request.Request(f"{url}/search", data=json.dumps({"query_embeddings": rows, "k": 100}).encode())
ids = [h["id"] for h in json.load(urllib.request.urlopen(req))["results"]]
open(f"{work}/rerank.json", "w").write(json.dumps({"query_embeddings": rows, "documents": [{"id": i} for i in ids], "top_n": 10}))
for name in ("search", "rerank"):
    open(f"{work}/{name}.lua", "w").write(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{work}/{name}.json")\nwrk.body = f:read("*a")\nf:close()\n')
PY

echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; $DOCS documents x 32 tokens, dim 128, nbits 2"
for endpoint in search rerank; do
    for c in 1 8 64; do
        t=$((c < 2 ? c : 2))
        echo "## POST /$endpoint, $c connections: wrk -t$t -c$c -d$DUR --latency"
        wrk -t"$t" -c"$c" -d"$DUR" --latency -s "$work/$endpoint.lua" "$url/$endpoint"
    done
done
curl -s "$url/metrics" | grep -E '^colbert_requests_total' || true
