#!/usr/bin/env bash
# Served A/B, SQLite: main (git archive of main at /tmp/scpu/main) against this branch
# (git archive of the commit measured, at /tmp/scpu/branch), alternating (ABBA), each run
# `benchmarks.approvals --engines sqlite --approvals 3000 --inflight 8 --no-burst
# --no-reference` (1,000 hub subscribers) with that tree first on PYTHONPATH, started from
# /tmp, the same venv; under the
# machine's benchmark lock; `uptime` before and after each.
# Usage: ab.sh PAIRS OUTDIR [PREFIX]
set -u
PAIRS=${1:-3}
OUT=$(cd "${2:-.}" && pwd)
PFX=${3:-pair}
PY=/work/wt/sqlite-cpu/.venv/bin/python
# benchmarks/ is unchanged on the branch: each tree runs the same harness code.
run() {  # code name
  local code=$1 name=$2 src=/tmp/scpu/$1
  { echo "== $name $(date -u +%FT%TZ) before: $(uptime)"; } >> "$OUT/ab.log"
  (cd /tmp && PYTHONPATH="$src" flock /work/wt/bench.lock "$PY" -m benchmarks.approvals \
      --engines sqlite --approvals 3000 --inflight 8 --no-burst --no-reference \
      --out "$OUT" --name "$name") >> "$OUT/ab.log" 2>&1
  { echo "== $name $(date -u +%FT%TZ) after: $(uptime)"; } >> "$OUT/ab.log"
}
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then run main "$PFX$i-main"; run branch "$PFX$i-branch"
  else run branch "$PFX$i-branch"; run main "$PFX$i-main"; fi
done
echo "== done $(date -u +%FT%TZ)" >> "$OUT/ab.log"
