#!/bin/bash
# Window 5: a second pair at 10,000 idle legacy sessions, the branch (/tmp/lg-br1, 84e1568)
# then main (/tmp/lg-main, d1dbfd6) (window 2 ran main first), run from /tmp.
OUT=/work/wt/legacy-get/benchmarks/results/mcp-memory/legacy-get
PY=/work/wt/legacy-get/.venv/bin/python
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/lg-main; else echo /tmp/lg-br1; fi; }
for who in branch main; do
  echo "=== mcp-memory 10k $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 900 $PY -m benchmarks mcp-memory --client raw --sizes 10000 --eras legacy --settle 15 --verify 200 --out $OUT/w5-10k-$who 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
done
echo "=== end $(date -u +%T) $(uptime)"
