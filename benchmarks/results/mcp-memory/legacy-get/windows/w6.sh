#!/bin/bash
# Window 6: a third pair at 10,000 idle legacy sessions, main (/tmp/lg-main, d1dbfd6)
# then the branch (/tmp/lg-br1, 84e1568), as window 2, run from /tmp.
OUT=/work/wt/legacy-get/benchmarks/results/mcp-memory/legacy-get
PY=/work/wt/legacy-get/.venv/bin/python
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/lg-main; else echo /tmp/lg-br1; fi; }
for who in main branch; do
  echo "=== mcp-memory 10k $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) timeout 900 $PY -m benchmarks mcp-memory --client raw --sizes 10000 --eras legacy --settle 15 --verify 200 --out $OUT/w6-10k-$who 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
done
echo "=== end $(date -u +%T) $(uptime)"
