#!/bin/bash
# Window 3: where a parked legacy session's memory is (Python allocations' growth by file,
# BENCH_INSTRUMENT=tracemalloc), main (/tmp/lg-main) then the branch (/tmp/lg-br1), 1,000
# sessions, read 15 s after the last is ready (all parked).
OUT=/work/wt/legacy-get/benchmarks/results/mcp-memory/legacy-get
PY=/work/wt/legacy-get/.venv/bin/python
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/lg-main; else echo /tmp/lg-br1; fi; }
for who in main branch; do
  echo "=== tracemalloc $who $(date -u +%T) $(uptime)"
  BENCH_INSTRUMENT=tracemalloc PYTHONPATH=$(pp $who) timeout 600 $PY -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy --settle 15 --out $OUT/w3-tm-$who 2>&1 | grep -v "^\[progress\]" > $OUT/tracemalloc-$who-1k.log; grep -E "mcp-memory. .{.era.|Traceback|Error" $OUT/tracemalloc-$who-1k.log | cut -c1-600
done
echo "=== end $(date -u +%T) $(uptime)"
