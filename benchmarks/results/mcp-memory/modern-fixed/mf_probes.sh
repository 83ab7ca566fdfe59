#!/bin/bash
while ! grep -q ALLDONE /tmp/mf_res/runs.txt; do sleep 5; done
cd /tmp
P="/work/wt/modern-fixed/.venv/bin/python -m benchmarks.mcp_memory_probe --settle 15 --collect-last"
run() { tag=$1; shift; which=$1; shift; mkdir -p /tmp/mf/$tag; echo "$tag $which $* start=$(date -u +%H:%M:%S) load=$(cut -d' ' -f1 /proc/loadavg)" >> /tmp/mf/probes.txt; PYTHONPATH=/tmp/mf_$which flock /work/wt/bench.lock $P --out /tmp/mf/$tag "$@" > /tmp/mf/$tag/table.txt 2>&1; }
run q1 branch --steps 1000
run q1m mainprobe --steps 1000
run q2 branch --steps 1000 --concurrency 8
run q2m mainprobe --steps 1000 --concurrency 8
run q3 branch --steps 1000 --warm-listens 64
run q3m mainprobe --steps 1000 --warm-listens 64
run q4 branch --steps 1000 --env MALLOC_ARENA_MAX=2
run q5 branch --steps 1000,10000
echo PROBESDONE >> /tmp/mf/probes.txt
