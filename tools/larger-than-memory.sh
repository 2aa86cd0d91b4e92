#!/usr/bin/env bash
# Search and rerank an index several times larger than the memory its process may use.
# Needs root (a cgroup v1 memory controller under /sys/fs/cgroup/memory caps the process,
# page cache included). Usage: bash tools/larger-than-memory.sh [CAP_MIB] [DOCS] [WORKDIR]
# Defaults: a 128 MiB cap, 60,000 documents of 32 tokens (dim 128) with the f16 tier and the
# stored WARP layout: ~650 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
CAP_MIB=${1:-128}
DOCS=${2:-60000}
WORK=${3:-/tmp/colbert-ltm}
CG=/sys/fs/cgroup/memory/colbert-ltm
cargo build --release --bin colbert-index --example memory_bound
B=target/release/colbert-index
mkdir -p "$WORK"
if [ ! -d "$WORK/idx" ]; then
  $B synth --docs "$DOCS" --clusters $((DOCS / 5)) --out "$WORK/docs.st" --queries-out "$WORK/q.st" --n-queries 200
  $B build --embeddings "$WORK/docs.st" --index "$WORK/idx" --store-f16 --warp-layout
  rm -f "$WORK/docs.st"
fi
# An index left by an older run of this script: add the stored WARP layout.
[ -f "$WORK/idx/warp_docs.u32" ] || $B compact --index "$WORK/idx" --warp-layout
SIZE=$(du -sb "$WORK/idx" | cut -f1)
echo "index $(( SIZE / 1048576 )) MiB, cap $CAP_MIB MiB ($(( SIZE / 1048576 / CAP_MIB ))x)"
if [ ! -d /sys/fs/cgroup/memory ]; then
  echo "no cgroup v1 memory controller here: measuring without a cap"
  exec target/release/examples/memory_bound "$WORK/idx" "$WORK/q.st" 1000
fi
mkdir -p "$CG"
echo $((CAP_MIB * 1048576)) > "$CG/memory.limit_in_bytes"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(could not drop the page cache: cold figures are warm)"
bash -c "echo \$\$ > $CG/cgroup.procs; exec target/release/examples/memory_bound '$WORK/idx' '$WORK/q.st' 1000"
OOM=$(awk '$1 == "oom_kill" {print $2}' "$CG/memory.oom_control")
echo "cgroup peak usage $(( $(cat "$CG/memory.max_usage_in_bytes") / 1048576 )) MiB, OOM kills: ${OOM:-0}"
rmdir "$CG" 2>/dev/null || true
