#!/usr/bin/env bash
# In-process A/B: benchmarks.decide_micro (this branch's copy, run against each code) on
# PostgreSQL, main and this branch alternating, under the benchmark lock, `uptime` with each.
# Usage: micro.sh PAIRS OUTFILE
set -u
PAIRS=${1:-4}
OUT=${2:-$(cd "$(dirname "$0")" && pwd)/micro.txt}
MAIN_SRC=/tmp/pgone/main-src; MAIN_PY=/tmp/pgone/main-venv/bin/python
BR_SRC=/work/wt/pg-onestmt; BR_PY=$BR_SRC/.venv/bin/python
PG=postgresql://postgres@127.0.0.1:5432/test
run() {
  local code=$1 src py
  if [ "$code" = main ]; then src=$MAIN_SRC py=$MAIN_PY; else src=$BR_SRC py=$BR_PY; fi
  echo "== $code $(date -u +%FT%TZ) $(uptime)" >> "$OUT"
  (cd "$src" && flock /work/wt/bench.lock "$py" -m benchmarks.decide_micro --postgres-url "$PG" \
      --approvals 2000) >> "$OUT" 2>&1
}
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then run main; run branch; else run branch; run main; fi
done
