#!/bin/bash
# One lock window: the lone-proposal profile of main (legacy, 1 session), then alternating
# main / branch: propose_micro, then mcp_propose (both eras, 1 and 8 sessions, 2 rounds;
# a second pair only if there was time).
# (Its micro runs are invalid as an A/B: see micro.sh.)
# Main: `git -C /work/main archive HEAD colaflow_mcp` in /tmp/propose-one-main;
# branch: `git archive HEAD colaflow_mcp` in /tmp/propose-one-br.
cd /work/wt/propose-one
OUT=benchmarks/results/mcp-propose/propose-one
exec flock /work/wt/bench.lock bash -c '
OUT='$OUT'
echo "== window $(date -u +%T) load $(cat /proc/loadavg)"
PYTHONPATH=/tmp/propose-one-main .venv/bin/python -m benchmarks.mcp_propose --profile $OUT/profiles --sessions 1 --eras legacy --calls 2000 --servers ours | head -1
for i in 1 2; do
  echo "== micro main $i $(date -u +%T) load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/propose-one-main .venv/bin/python -m benchmarks.propose_micro --concurrency 1,8 --blocks 4 --size 400 | tee -a $OUT/micro-ab.jsonl
  echo "== micro branch $i $(date -u +%T) load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/propose-one-br .venv/bin/python -m benchmarks.propose_micro --concurrency 1,8 --blocks 4 --size 400 | tee -a $OUT/micro-ab.jsonl
done
for i in 1 2; do
  # The second pair only if it can end before the hard stop (17:05 UTC).
  if [ $i = 2 ] && [ $(date -u +%H%M) -ge 1648 ]; then echo "== no second pair ($(date -u +%T))"; break; fi
  echo "== main $i $(date -u +%T) load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/propose-one-main .venv/bin/python -m benchmarks.mcp_propose --sessions 1,8 --rounds 2 --calls 1000 --eras modern,legacy --out $OUT/before-$i.json
  echo "== branch $i $(date -u +%T) load $(cat /proc/loadavg)"
  PYTHONPATH=/tmp/propose-one-br .venv/bin/python -m benchmarks.mcp_propose --sessions 1,8 --rounds 2 --calls 1000 --eras modern,legacy --out $OUT/after-$i.json
done
echo "== done $(date -u +%T) load $(cat /proc/loadavg)"
'
