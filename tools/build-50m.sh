#!/usr/bin/env bash
# The streaming-build demonstration: writes a 50-million-token clustered synthetic collection
# (1 562 500 documents × 32 tokens × 128 dims, f16: 12.8 GB) with `colbert-index synth`, builds a
# compressed index over it, and prints wall time and peak resident memory of each step
# (`/usr/bin/time -v`), so that one can check that build memory is set by the training sample and
# the chunk size, not by the collection.
#
#   bash tools/build-50m.sh [DIR]          # DIR: scratch directory (default /tmp/build-50m)
#
# Environment: TOKENS_DOCS (default 1562500), CENTROIDS (default 4096), SAMPLE_DOCS (default
# 20000), NBITS (default 2). The centroid count and sample are lowered from the defaults for
# this corpus size (65536 centroids trained on 1M tokens: the sample documents hold 7M, and the
# training sample keeps at most --train-memory, 512 MiB) only to keep the CPU time of the demo to
# about half an hour on 2 cores: assignment costs tokens × centroids × dim, while memory depends
# on the sample (sample tokens × dim × 4 bytes, at most --train-memory) and the centroids
# (C × dim × 4 bytes).
# Needs about 15 GB of free disk.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-/tmp/build-50m}
DOCS=${TOKENS_DOCS:-1562500}
CENTROIDS=${CENTROIDS:-4096}
SAMPLE_DOCS=${SAMPLE_DOCS:-20000}
NBITS=${NBITS:-2}
mkdir -p "$DIR"

cargo build --release --quiet
BIN=target/release/colbert-index

measure() {
    local log="$DIR/$1.time"
    shift
    /usr/bin/time -v "$@" 2>"$log.err" || { cat "$log.err" >&2; exit 1; }
    grep -E "Elapsed|Maximum resident" "$log.err" | sed "s/^\s*/$(basename "$log" .time): /"
}

if [ ! -f "$DIR/corpus.safetensors" ]; then
    measure synth "$BIN" synth --out "$DIR/corpus.safetensors" --docs "$DOCS" --tokens-per-doc 32 \
        --dim 128 --clusters $((DOCS / 5)) --overwrite
fi
ls -l "$DIR/corpus.safetensors"
measure build "$BIN" build --embeddings "$DIR/corpus.safetensors" --index "$DIR/index" --nbits "$NBITS" \
    --centroids "$CENTROIDS" --sample-docs "$SAMPLE_DOCS" --overwrite
du -sb "$DIR/index"
"$BIN" info --index "$DIR/index"
