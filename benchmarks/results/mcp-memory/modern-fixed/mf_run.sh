#!/bin/bash
# usage: mf_run.sh <main|branch> <size> <tag> [warm]
# main = /tmp/mf_main (git archive of main), branch = /tmp/mf_branch (git archive of the branch's
# HEAD); both with the branch's benchmarks/ (same benchmark code). warm: --warm-mcp K (default 0).
which=$1; size=$2; tag=$3; warm=${4:-0}
out=/tmp/mf_res/$tag-$which-$size
mkdir -p $out
cd /tmp
load=$(cut -d' ' -f1 /proc/loadavg)
start=$(date -u +%H:%M:%S)
PYTHONPATH=/tmp/mf_$which flock /work/wt/bench.lock /work/wt/modern-fixed/.venv/bin/python -m benchmarks mcp-memory --client raw --eras modern --sizes $size --settle 15 --verify 200 --warm-mcp $warm --out $out > $out/log.txt 2>&1
rc=$?
echo "$tag $which $size warm=$warm start=$start load1_before=$load load1_after=$(cut -d' ' -f1 /proc/loadavg) rc=$rc" | tee -a /tmp/mf_res/runs.txt
