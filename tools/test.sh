#!/usr/bin/env bash
# The test command: every test of the workspace, then again with the SIMD kernels disabled
# (scalar fallback), then a compile check of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace
echo "== again with SIMD disabled (--features scalar-only)"
cargo test --workspace --features scalar-only
echo "== benchmarks compile"
cargo bench --workspace --no-run
