#!/bin/bash
# Window 0: main (/tmp/lg-main: git archive main colaflow_mcp benchmarks) alone, run from
# /tmp: 1,000 idle legacy sessions and 1,000 modern listeners, RSS read 15 s after the last
# is ready (legacy sessions park after 10 s), then 200 approvals that must arrive.
OUT=/work/wt/legacy-get/benchmarks/results/mcp-memory/legacy-get
PY=/work/wt/legacy-get/.venv/bin/python
cd /tmp
echo "=== mcp-memory main $(date -u +%T) $(uptime)"
PYTHONPATH=/tmp/lg-main timeout 600 $PY -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy,modern --settle 15 --verify 200 --out $OUT/w0-main 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|Error" | cut -c1-900
echo "=== end $(date -u +%T) $(uptime)"
