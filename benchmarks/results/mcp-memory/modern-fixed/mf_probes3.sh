#!/bin/bash
while ! grep -q TRIMDONE /tmp/mf_res/runs.txt; do sleep 5; done
cd /tmp
P="/work/wt/modern-fixed/.venv/bin/python -m benchmarks.mcp_memory_probe --settle 15 --collect-last"
run() { tag=$1; shift; which=$1; shift; mkdir -p /tmp/mf/$tag; echo "$tag $which $* start=$(date -u +%H:%M:%S) load=$(cut -d' ' -f1 /proc/loadavg)" >> /tmp/mf/probes.txt; PYTHONPATH=/tmp/mf_$which flock /work/wt/bench.lock $P --out /tmp/mf/$tag "$@" > /tmp/mf/$tag/table.txt 2>&1; }
run r1 branch --steps 1000,10000
run r2 trim --steps 1000
echo PROBES3DONE >> /tmp/mf/probes.txt
