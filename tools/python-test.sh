#!/usr/bin/env bash
# The Python package's tests: builds the wheel with maturin into the workspace's own target
# directory (the Rust tests' artifacts are reused: only pyo3 and the bindings compile), installs
# it into a fresh virtual environment under target/, and runs pytest (python/tests/) against it
# and the `colbert-index` binary of the same build.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.7,<2" "numpy>=1.21" "pytest>=7" "requests>=2" "cohere>=5" \
    "ray[serve]==2.60.0"
# The workspace's test build (a no-op after `cargo test --workspace`, which tools/test.sh runs
# first): the `colbert-index` binary the tests drive, compiled with the same features.
cargo test --workspace --no-run
rm -rf target/wheels
"$venv/bin/maturin" build --profile dev --manifest-path python/Cargo.toml --interpreter "$venv/bin/python" \
    --out target/wheels
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps target/wheels/colbert_index-*.whl
COLBERT_INDEX_BIN="$PWD/target/debug/colbert-index" "$venv/bin/pytest" -q python/tests
