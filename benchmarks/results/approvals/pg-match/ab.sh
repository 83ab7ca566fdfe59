#!/bin/bash
# A/B(/C): main (/tmp/pgm_main, 2230211) against the branch's states (/tmp/pgm_v1: early
# hand-off, 1a5ed14; /tmp/pgm_v2: + endpoints read by the claim), rotating the order each
# round and alternating the engines' order; the same benchmarks/ code for all.
# Usage (one lock hold per round): flock /work/wt/bench.lock ab.sh <window> <round> <variants...>
OUT=/work/wt/pg-match/benchmarks/results/approvals/pg-match/$1
PY=/work/wt/pg-match/.venv/bin/python
r=$2; shift 2
mkdir -p $OUT
if [ $((r % 2)) = 1 ]; then e=sqlite,postgres; else e=postgres,sqlite; fi
for v in "$@"; do
  cd /tmp/pgm_$v
  echo "r$r-$v $e start load: $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%T)" >> $OUT/loads.txt
  PYTHONPATH=/tmp/pgm_$v $PY -m benchmarks.approvals --engines $e --no-burst --out $OUT --name r$r-$v > $OUT/r$r-$v.log 2>&1
  echo "r$r-$v end load: $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%T)" >> $OUT/loads.txt
done
