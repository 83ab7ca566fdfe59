#!/bin/bash
# 2026-12-02 evening window, on main 816aa74 (quiet machine, nothing else running).
# Part 1: the set-wise SQLite claim (sqlite-cpu) on/off: the same tree with
#   `plain = _claim_sets(...)` replaced by `plain = []` ("off"), SQLite only, ABBA order.
# Part 2: issue 16.3, both engines in one run, engine order alternating.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/window-1202e
mkdir -p $OUT/claim $OUT/engines
log() { echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> $OUT/loads.txt; }
run() { log claim $1 $2; (cd /tmp/abm/$1 && PYTHONPATH=/tmp/abm/$1 $PY -m benchmarks.approvals --engines sqlite \
    --no-burst --no-reference --out $OUT/claim --name $2 > $OUT/claim/$2.log 2>&1); }
for n in 1 2 3 4 5 6; do
  if [ $((n % 2)) = 1 ]; then run on p$n-on; run off p$n-off; else run off p$n-off; run on p$n-on; fi
done
cd /work/main
for n in 1 2 3 4 5 6; do
  if [ $((n % 2)) = 1 ]; then e=postgres,sqlite; else e=sqlite,postgres; fi
  log engines r$n $e
  $PY -m benchmarks.approvals --engines $e --no-burst --out $OUT/engines --name r$n > $OUT/engines/r$n.log 2>&1
done
log done
