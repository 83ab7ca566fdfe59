#!/bin/bash
# Step 1: where a served approval waits. One run per (code, engines) with the group-split
# instrument; the server's SPLIT lines go to split-<tag>.txt. Usage: split.sh <main|branch> <tag> <engines>
set -e
code=$1; tag=$2; engines=$3
OUT=/work/wt/pg-match/benchmarks/results/approvals/pg-match
PY=/work/wt/pg-match/.venv/bin/python
cd /tmp/pgm_$code  # main, branch/v1 (early hand-off), v2 (+ endpoints read by the claim)
echo "$tag $code $engines load: $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%T)" >> $OUT/loads.txt
BENCH_INSTRUMENT=group-split BENCH_SPLIT_OUT=$OUT/split-$tag.txt PYTHONPATH=/tmp/pgm_$code \
  $PY -m benchmarks.approvals --engines $engines --no-burst --out $OUT --name $tag 2>&1 | tail -25 > $OUT/$tag.log
echo "  end load: $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%T)" >> $OUT/loads.txt
