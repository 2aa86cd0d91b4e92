#!/usr/bin/env bash
# Pruning recall of PLAID on a compressed index: for each set of search options, the fraction of
# the exhaustive top k (every document decompressed and scored, `--exhaustive`) that PLAID with
# those options also returns. Residual scoring only (`--no-rescore`), so the exact tier does not
# hide pruning losses.
#
#   bash tools/pruning-recall.sh INDEX QUERIES K [OPTIONS...]
#
# QUERIES is a TSV or BEIR queries.jsonl; each OPTIONS argument is one quoted set of search
# options, e.g. "--ncells 2 --ndocs 512" (an empty string measures the defaults). Example, the
# table of docs/PLAID.md "Defaults":
#
#   bash tools/pruning-recall.sh target/quality-modes-npl/nbits4 \
#       target/rerank-quality/collections/npl/queries.jsonl 10 "" "--ncells 4 --ndocs 256"
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 3 ]] || { sed -n 2,14p "$0"; exit 2; }
index="$1" queries="$2" k="$3"
shift 3
bin=target/release/colbert-index
cargo build --release --quiet # a stale binary would measure stale defaults
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$bin search --index "$index" --queries "$queries" -k "$k" --no-rescore --exhaustive >"$tmp/exhaustive.run"
for opts in "${@:-}"; do
  # shellcheck disable=SC2086 # each argument is a list of options
  $bin search --index "$index" --queries "$queries" -k "$k" --no-rescore $opts >"$tmp/plaid.run"
  python3 - "$tmp/exhaustive.run" "$tmp/plaid.run" "${opts:-defaults}" <<'PY'
import sys
from collections import defaultdict

def load(path):
    runs = defaultdict(set)
    for line in open(path):
        qid, _, doc = line.split()[:3]
        runs[qid].add(doc)
    return runs

want, got = load(sys.argv[1]), load(sys.argv[2])
hits = sum(len(docs & got.get(q, set())) for q, docs in want.items())
total = sum(len(docs) for docs in want.values())
print(f"{sys.argv[3]}: pruning recall {hits / total:.4f} over {len(want)} queries")
PY
done
