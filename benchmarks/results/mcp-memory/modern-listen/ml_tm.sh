#!/bin/bash
which=$1; out=/tmp/ml_res/tm-$which-1000b; mkdir -p $out; cd /tmp
PYTHONPATH=/tmp/ml_$which:/work/wt/modern-listen BENCH_INSTRUMENT=tracemalloc flock /work/wt/bench.lock /work/wt/modern-listen/.venv/bin/python -m benchmarks mcp-memory --client raw --eras modern --sizes 1000 --settle 15 --out $out > $out/log.txt 2>&1
echo "tm $which done $(date -u +%H:%M:%S)" >> /tmp/ml_res/runs.txt
