#!/bin/bash
# usage: ml_run.sh <main|branch> <size> <tag>
which=$1; size=$2; tag=$3
out=/tmp/ml_res/$tag-$which-$size
mkdir -p $out
cd /tmp
load=$(cut -d' ' -f1 /proc/loadavg)
start=$(date -u +%H:%M:%S)
PYTHONPATH=/tmp/ml_$which:/work/wt/modern-listen flock /work/wt/bench.lock /work/wt/modern-listen/.venv/bin/python -m benchmarks mcp-memory --client raw --eras modern --sizes $size --settle 15 --verify 200 --out $out > $out/log.txt 2>&1
echo "$tag $which $size start=$start load1_before=$load load1_after=$(cut -d' ' -f1 /proc/loadavg) rc=$?" | tee -a /tmp/ml_res/runs.txt
