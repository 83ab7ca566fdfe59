#!/bin/bash
# Window 3: tried — malloc_trim(0) after each parker tick that parked something
# (/tmp/mcp-park-trim: the branch at 13dd982 plus that, not committed), 1,000 and 10,000
# idle legacy sessions; the server logs each trim's duration (a pause of the event loop).
OUT=/work/wt/mcp-park/benchmarks/results/mcp-memory/mcp-park
PY=/work/wt/mcp-park/.venv/bin/python
cd /tmp
for size in 1000; do
  echo "=== mcp-memory $size trim $(date -u +%T) $(uptime)"
  PYTHONPATH=/tmp/mcp-park-trim timeout 900 $PY -m benchmarks mcp-memory --client raw --sizes $size --eras legacy --settle 15 --verify 200 --out $OUT/w3-trim-$size 2>&1 | grep -E "^\[mcp-memory\] \{'era'|Traceback|malloc_trim" | cut -c1-1500
done
echo "=== end $(date -u +%T) $(uptime)"
