#!/bin/bash
# usage: mb_tm.sh <main|branch>: Python objects per listener (tracemalloc), 1,000 listeners
which=$1; out=/tmp/mb_res/tm-$which-1000; mkdir -p $out; cd /tmp
PYTHONPATH=/tmp/mb_$which BENCH_INSTRUMENT=tracemalloc flock /work/wt/bench.lock /work/wt/modern-bare/.venv/bin/python -m benchmarks mcp-memory --client raw --eras modern --sizes 1000 --settle 15 --out $out > $out/log.txt 2>&1
echo "tm $which done $(date -u +%H:%M:%S) rc=$?" >> /tmp/mb_res/runs.txt
