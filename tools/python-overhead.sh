#!/usr/bin/env bash
# The Python package's overhead: per-query latency (one query at a time, median) and batched
# throughput of `Index.search` from Python next to the same loop in Rust
# (examples/search_latency.rs), on a clustered synthetic set of 1M tokens (31,250 documents of 32
# tokens, 128-d, 6,250 clusters; 200 queries). Three alternating rounds of each side; prints
# every run and the Python/Rust ratios of the medians.
#
# usage: tools/python-overhead.sh [PYTHON]
#   PYTHON: an interpreter with the package installed from a release build (default python3;
#   `pip install ./python` builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
"$py" -c "import colbert_index" || { echo "$py cannot import colbert_index: pip install ./python" >&2; exit 1; }
work=target/python-overhead
mkdir -p "$work"
cargo build --release --quiet --bin colbert-index --example search_latency
bin=target/release/colbert-index
if [ ! -d "$work/index" ]; then
    rm -f "$work/d.st" "$work/q.st"
    $bin synth --docs 31250 --tokens-per-doc 32 --dim 128 --clusters 6250 --n-queries 200 \
        --out "$work/d.st" --queries-out "$work/q.st" >&2
    $bin build --embeddings "$work/d.st" --index "$work/index" >&2
fi
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /'
echo "cores: $(nproc)"
for round in 1 2 3; do
    target/release/examples/search_latency "$work/index" "$work/q.st" 5 10 | tee -a "$work/runs.jsonl"
    "$py" tools/python_latency.py "$work/index" "$work/q.st" 5 10 | tee -a "$work/runs.jsonl"
done
tail -n 6 "$work/runs.jsonl" | "$py" -c '
import json, statistics, sys
runs = [json.loads(line) for line in sys.stdin]
for metric, unit in (("p50_ms", "ms per query, median"), ("batch_qps", "batched QPS, median")):
    rust = statistics.median(r[metric] for r in runs if r["side"] == "rust")
    python = statistics.median(r[metric] for r in runs if r["side"] == "python")
    print("%s: rust %.3f, python %.3f, python/rust %.3f" % (unit, rust, python, python / rust))
'
