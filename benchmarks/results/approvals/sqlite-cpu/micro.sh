#!/usr/bin/env bash
# In-process A/B of the decision path alone (no HTTP, nobody subscribed), SQLite:
# `python -m benchmarks.decide_micro --approvals 3000 --inflight 8` with main's or the
# branch's tree (git archives at /tmp/scpu/{main,branch}) on PYTHONPATH, alternating,
# under the benchmark lock. Usage: micro.sh PAIRS FILE
set -u
PAIRS=${1:-4}; FILE=$2
PY=/work/wt/sqlite-cpu/.venv/bin/python
run() {
  echo "== $1 $(date -u +%FT%TZ) $(uptime)" >> "$FILE"
  (cd /tmp && PYTHONPATH=/tmp/scpu/$1 flock /work/wt/bench.lock "$PY" -m benchmarks.decide_micro \
      --approvals 3000 --inflight 8) >> "$FILE" 2>&1
}
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then run main; run branch; else run branch; run main; fi
done
