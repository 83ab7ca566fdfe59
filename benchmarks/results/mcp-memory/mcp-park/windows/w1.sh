#!/bin/bash
# Window 1: main (/tmp/mcp-park-main: main's colaflow_mcp, this branch's benchmarks) vs the
# branch (/tmp/mcp-park-br1), alternating, run from /tmp. 1,000 idle legacy sessions,
# RSS read 15 s after the last is ready (legacy sessions park after 10 s), then 200
# approvals that must reach their sessions; then legacy create_issue CPU, ours vs the
# bare SDK, at 1 and 8 sessions.
OUT=/work/wt/mcp-park/benchmarks/results/mcp-memory/mcp-park
POUT=/work/wt/mcp-park/benchmarks/results/mcp-propose/mcp-park
PY=/work/wt/mcp-park/.venv/bin/python
mkdir -p $OUT $POUT
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/mcp-park-main; else echo /tmp/mcp-park-br1; fi; }
for round in 1 2; do
  for who in main branch; do
    echo "=== mcp-memory $who round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$(pp $who) timeout 600 $PY -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy --settle 15 --verify 200 --out $OUT/w1-$who-$round 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
  done
done
for who in main branch; do
  echo "=== mcp-propose legacy $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 600 $PY -m benchmarks.mcp_propose --eras legacy --sessions 1,8 --calls 1000 --rounds 1 --out $POUT/w1-$who.json 2>&1 | tail -6
done
echo "=== end $(date -u +%T) $(uptime)"
