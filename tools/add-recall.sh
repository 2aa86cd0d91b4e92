#!/usr/bin/env bash
# Recall@10 against exact MaxSim of an index built from 99% of a collection plus `add` of the
# last 1%, next to a fresh build of all of it, on synthetic 1M-token sets (docs/STORE.md).
# Needs Python 3 with numpy and safetensors (to split the embeddings file).
# Usage: bash tools/add-recall.sh [SEEDS] [WORKDIR]   (defaults: "1 2 3", /tmp/colbert-add-recall)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-1 2 3}
WORK=${2:-/tmp/colbert-add-recall}
cargo build --release --bin colbert-index
B=$PWD/target/release/colbert-index
mkdir -p "$WORK"
cd "$WORK"
for seed in $SEEDS; do
  rm -rf d.st q.st ex fr ba
  $B synth --docs 31250 --clusters 6250 --seed "$seed" --n-queries 200 --out d.st --queries-out q.st 2>/dev/null
  python3 - <<'PY'
import numpy as np
from safetensors.numpy import load_file, save_file
d = load_file("d.st"); emb, lens = d["embeddings"], d["doclens"].astype(np.int64)
n = len(lens); k = n // 100; base = n - k; cut = int(lens[:base].sum())
save_file({"embeddings": emb[:cut], "doclens": lens[:base]}, "base.st")
save_file({"embeddings": emb[cut:], "doclens": lens[base:]}, "add.st")
open("add.ids", "w").write("".join(f"{i}\n" for i in range(base, n)))
PY
  $B build --embeddings d.st --index ex --nbits 16 >/dev/null 2>&1
  $B build --embeddings d.st --index fr >/dev/null 2>&1
  $B build --embeddings base.st --index ba >/dev/null 2>&1
  $B add --index ba --embeddings add.st --ids add.ids >/dev/null 2>&1
  for i in ex fr ba; do $B search --index $i --query-embeddings q.st -k 10 > $i.run 2>/dev/null; done
  python3 - "$seed" <<'PY'
import sys, collections
def run(p):
    r = collections.defaultdict(list)
    for line in open(p):
        q, _, d, *_ = line.split()
        r[q].append(d)
    return r
ex, fr, ba = run("ex.run"), run("fr.run"), run("ba.run")
rec = lambda o: sum(len(set(ex[q][:10]) & set(o[q][:10])) / 10 for q in ex) / len(ex)
f, b = rec(fr), rec(ba)
print(f"seed {sys.argv[1]}: recall@10 vs exact: fresh {f:.4f}, base + add {b:.4f}, gap {f - b:.4f}")
PY
done
