#!/bin/bash
# Window 3: hub latency at 10k, main vs branch HEAD (br2), alternating twice; legacy sessions --verify on the branch.
cd /work/wt/mem-lean
LOUT=benchmarks/results/issue14-regress/mem-lean
MOUT=benchmarks/results/mcp-memory/mem-lean
for round in 1 2; do
  for who in main branch; do
    if [ $who = main ]; then PP=/tmp/mem-lean-main; else PP=/tmp/mem-lean-br2; fi
    echo "=== latency 10k $who(br2) round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$PP .venv/bin/python -m benchmarks latency --sizes 10000 --rate 100 --out $LOUT/w3-$who-$round 2>&1 | grep -E "^\[latency\]|Traceback|Error" | tail -3
  done
done
echo "=== mcp-memory legacy --verify 200 branch(br2) $(date -u +%T) $(uptime)"
PYTHONPATH=/tmp/mem-lean-br2 .venv/bin/python -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy --verify 200 --out $MOUT/w3-verify-branch 2>&1 | grep -E "^\[mcp-memory\]|Traceback" | tail -3
echo "=== end $(date -u +%T) $(uptime)"
