#!/usr/bin/env bash
# Served, SQLite: main, the set-wise claim alone (52cc110) and both cuts (the branch's
# HEAD), rotating (main/claim/head, then the order shifted by one each round), each run
# `benchmarks.approvals --engines sqlite --approvals 3000 --inflight 8 --no-burst
# --no-reference` (1,000 hub subscribers) with that tree (git archives at
# /tmp/scpu/{main,claim,head}) on PYTHONPATH, started from /tmp, the same venv; the
# benchmark code is unchanged on the branch. Under the benchmark lock; uptime logged.
# Usage: ab3.sh ROUNDS OUTDIR
set -u
ROUNDS=${1:-4}
OUT=$(cd "${2:-.}" && pwd)
PY=/work/wt/sqlite-cpu/.venv/bin/python
run() {  # code name
  { echo "== $2 $(date -u +%FT%TZ) before: $(uptime)"; } >> "$OUT/ab.log"
  (cd /tmp && PYTHONPATH="/tmp/scpu/$1" flock /work/wt/bench.lock "$PY" -m benchmarks.approvals \
      --engines sqlite --approvals 3000 --inflight 8 --no-burst --no-reference \
      --out "$OUT" --name "$2") >> "$OUT/ab.log" 2>&1
  { echo "== $2 $(date -u +%FT%TZ) after: $(uptime)"; } >> "$OUT/ab.log"
}
codes=(main claim head)
for i in $(seq 1 "$ROUNDS"); do
  for k in 0 1 2; do
    c=${codes[$(( (k + i - 1) % 3 ))]}
    run "$c" "round$i-$c"
  done
done
echo "== done $(date -u +%FT%TZ)" >> "$OUT/ab.log"
