#!/bin/bash
# One lock window: alternating branch / main, mcp_propose (both eras) then the micro.
cd /work/wt/propose-fast
OUT=benchmarks/results/mcp-propose/2026-11-30-propose-fast
mkdir -p $OUT
for i in 1 2; do
  echo "== branch $i load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/pf_branch .venv/bin/python -m benchmarks.mcp_propose --sessions 1,8 --rounds 2 --calls 1000 --eras modern,legacy --out $OUT/after-$i.json
  echo "== main $i load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/pf_main .venv/bin/python -m benchmarks.mcp_propose --sessions 1,8 --rounds 2 --calls 1000 --eras modern,legacy --out $OUT/before-$i.json
done
for i in 1 2; do
  echo "== micro branch $i load $(cat /proc/loadavg)"
  (cd /tmp/pf_branch && PYTHONPATH=/tmp/pf_branch /work/wt/propose-fast/.venv/bin/python -m benchmarks.propose_micro --blocks 4 --size 400) | tee -a $OUT/micro-after.jsonl
  echo "== micro main $i load $(cat /proc/loadavg)"
  (cd /tmp/pf_main && PYTHONPATH=/tmp/pf_main /work/wt/propose-fast/.venv/bin/python -m benchmarks.propose_micro --blocks 4 --size 400) | tee -a $OUT/micro-before.jsonl
done
echo "== done $(date -u) load $(cat /proc/loadavg)"
