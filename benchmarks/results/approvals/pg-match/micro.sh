#!/bin/bash
# In-process decision path (no HTTP, no subscribers), main and v2 alternating, PostgreSQL
# then SQLite: python -m benchmarks.decide_micro --approvals 2000 [--postgres-url …]
OUT=/work/wt/pg-match/benchmarks/results/approvals/pg-match/micro.txt
PY=/work/wt/pg-match/.venv/bin/python
for order in "main v2" "v2 main" "main v2"; do
  for v in $order; do
    for pg in "--postgres-url postgresql://postgres@127.0.0.1:5432/postgres" ""; do
      cd /tmp/pgm_$v
      echo "== $v ${pg:+postgres}${pg:-sqlite} load $(cut -d' ' -f1 /proc/loadavg) $(date -u +%T)" >> $OUT
      PYTHONPATH=/tmp/pgm_$v timeout 300 $PY -m benchmarks.decide_micro --approvals 2000 $pg >> $OUT 2>&1
    done
  done
done
