#!/bin/bash
# Window 2: 10,000 idle legacy sessions, main (/tmp/lg-main, d1dbfd6) then the branch
# (/tmp/lg-br1, 84e1568), run from /tmp; RSS read 15 s after the last is ready, then 200
# approvals that must arrive. Then legacy create_issue CPU, ours vs the bare SDK, at 1
# and 8 sessions, main then branch.
OUT=/work/wt/legacy-get/benchmarks/results/mcp-memory/legacy-get
POUT=/work/wt/legacy-get/benchmarks/results/mcp-propose/legacy-get
PY=/work/wt/legacy-get/.venv/bin/python
mkdir -p $POUT
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/lg-main; else echo /tmp/lg-br1; fi; }
for who in main branch; do
  echo "=== mcp-memory 10k $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 900 $PY -m benchmarks mcp-memory --client raw --sizes 10000 --eras legacy --settle 15 --verify 200 --out $OUT/w2-10k-$who 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
done
for who in main branch; do
  echo "=== mcp-propose legacy $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 600 $PY -m benchmarks.mcp_propose --eras legacy --sessions 1,8 --calls 1000 --rounds 1 --out $POUT/w2-$who.json 2>&1 | tail -4
done
echo "=== end $(date -u +%T) $(uptime)"
