#!/bin/bash
# Window 1: main (/tmp/lg-main: git archive main (d1dbfd6) colaflow_mcp benchmarks) against
# the branch (/tmp/lg-br1: git archive 84e1568), alternating, run from /tmp. 1,000 idle
# legacy sessions, then 1,000 modern listeners; RSS read 15 s after the last is ready
# (legacy sessions park after 10 s), then 200 approvals that must arrive.
OUT=/work/wt/legacy-get/benchmarks/results/mcp-memory/legacy-get
PY=/work/wt/legacy-get/.venv/bin/python
cd /tmp
pp() { if [ $1 = main ]; then echo /tmp/lg-main; else echo /tmp/lg-br1; fi; }
for round in 1 2; do
  for who in main branch; do
    echo "=== mcp-memory $who round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$(pp $who) timeout 600 $PY -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy,modern --settle 15 --verify 200 --out $OUT/w1-$who-$round 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
  done
done
echo "=== end $(date -u +%T) $(uptime)"
