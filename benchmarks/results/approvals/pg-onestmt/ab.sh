#!/usr/bin/env bash
# Served A/B: main (git archive of main, its own venv) against this branch, alternating,
# each run `benchmarks.approvals --engines sqlite,postgres` (3,000 approvals, 8 in flight,
# 1,000 hub subscribers, no burst) under the machine's benchmark lock, `uptime` with each.
# Usage: ab.sh PAIRS OUTDIR
set -u
PAIRS=${1:-4}
OUT=${2:-$(cd "$(dirname "$0")" && pwd)}
MAIN_SRC=/tmp/pgone/main-src; MAIN_PY=/tmp/pgone/main-venv/bin/python
BR_SRC=/work/wt/pg-onestmt; BR_PY=$BR_SRC/.venv/bin/python
run() {  # code name
  local code=$1 name=$2 src py
  if [ "$code" = main ]; then src=$MAIN_SRC py=$MAIN_PY; else src=$BR_SRC py=$BR_PY; fi
  { echo "== $name $(date -u +%FT%TZ) before: $(uptime)"; } >> "$OUT/ab.log"
  (cd "$src" && flock /work/wt/bench.lock "$py" -m benchmarks.approvals --engines sqlite,postgres \
      --approvals 3000 --inflight 8 --no-burst --out "$OUT" --name "$name") >> "$OUT/ab.log" 2>&1
  { echo "== $name $(date -u +%FT%TZ) after: $(uptime)"; } >> "$OUT/ab.log"
}
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then run main "pair$i-main"; run branch "pair$i-branch"
  else run branch "pair$i-branch"; run main "pair$i-main"; fi
done
echo "== done $(date -u +%FT%TZ)" >> "$OUT/ab.log"
