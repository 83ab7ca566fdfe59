#!/bin/bash
# Window 5 (short): MCP legacy sessions main vs branch HEAD (br3, ce4329e), alternating twice.
cd /work/wt/mem-lean
MOUT=benchmarks/results/mcp-memory/mem-lean
for round in 1 2; do
  for who in main branch; do
    if [ $who = main ]; then PP=/tmp/mem-lean-main; else PP=/tmp/mem-lean-br3; fi
    echo "=== mcp-memory legacy $who(br3) round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$PP .venv/bin/python -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy --out $MOUT/w5-$who-$round 2>&1 | grep -E "rss_per_client|Traceback" | tail -3
  done
done
echo "=== end $(date -u +%T) $(uptime)"
