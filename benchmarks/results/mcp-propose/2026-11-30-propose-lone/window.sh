#!/bin/bash
# One lock window per run: alternating main / branch, mcp_propose (both eras, 1 and 8 sessions).
cd /work/wt/propose-lone
OUT=benchmarks/results/mcp-propose/2026-11-30-propose-lone
mkdir -p $OUT
for i in 1 2; do
  echo "== main $i $(date -u +%T) load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/ab_main_pl flock /work/wt/bench.lock .venv/bin/python -m benchmarks.mcp_propose --sessions 1,8 --rounds 2 --calls 1000 --eras modern,legacy --out $OUT/before-$i.json
  echo "== branch $i $(date -u +%T) load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/ab_branch_pl flock /work/wt/bench.lock .venv/bin/python -m benchmarks.mcp_propose --sessions 1,8 --rounds 2 --calls 1000 --eras modern,legacy --out $OUT/after-$i.json
done
echo "== done $(date -u +%T) load $(cat /proc/loadavg)"
