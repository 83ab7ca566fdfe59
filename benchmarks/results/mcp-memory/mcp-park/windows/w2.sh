#!/bin/bash
# Window 2: 10,000 idle legacy sessions, main vs the branch (set-up takes minutes, longer
# than the park delay, so most sessions are parked while later ones open, as on a server
# that gathers sessions over time); then legacy create_issue CPU again, two rounds each.
OUT=/work/wt/mcp-park/benchmarks/results/mcp-memory/mcp-park
PY=/work/wt/mcp-park/.venv/bin/python
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/mcp-park-main; else echo /tmp/mcp-park-br1; fi; }
for who in branch main; do
  echo "=== mcp-memory 10k $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 900 $PY -m benchmarks mcp-memory --client raw --sizes 10000 --eras legacy --settle 15 --verify 200 --out $OUT/w2-10k-$who 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
done
POUT=/work/wt/mcp-park/benchmarks/results/mcp-propose/mcp-park
for who in branch main; do
  echo "=== mcp-propose legacy $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 600 $PY -m benchmarks.mcp_propose --eras legacy --sessions 1,8 --calls 1000 --rounds 2 --out $POUT/w2-$who.json 2>&1 | tail -4
done
echo "=== end $(date -u +%T) $(uptime)"
