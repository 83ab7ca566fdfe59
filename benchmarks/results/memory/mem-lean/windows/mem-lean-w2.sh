#!/bin/bash
# Window 2: hub memory main vs branch HEAD snapshot (br2), alternating; then tracemalloc of
# a legacy session on the branch.
cd /work/wt/mem-lean
HOUT=benchmarks/results/memory/mem-lean
MOUT=benchmarks/results/mcp-memory/mem-lean
for round in 1 2; do
  for who in main branch; do
    if [ $who = main ]; then PP=/tmp/mem-lean-main; else PP=/tmp/mem-lean-br2; fi
    echo "=== hub memory $who(br2) round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$PP .venv/bin/python -m benchmarks memory --out $HOUT/w2-$who-$round 2>&1 | grep -E "^\[memory\]|Traceback|Error"
  done
done
echo "=== tracemalloc legacy branch(br2) $(date -u +%T) $(uptime)"
BENCH_INSTRUMENT=tracemalloc PYTHONPATH=/tmp/mem-lean-br2 .venv/bin/python -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy --out $MOUT/w2-tracemalloc-branch > $MOUT/tracemalloc-branch-1k.log 2>&1
grep -E "TM |\[mcp-memory\]" $MOUT/tracemalloc-branch-1k.log | head -45
echo "=== end $(date -u +%T) $(uptime)"
