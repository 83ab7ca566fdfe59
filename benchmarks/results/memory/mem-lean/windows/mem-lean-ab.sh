#!/bin/bash
# A/B in one lock window: main (4328656) vs branch snapshot ($BR), alternating.
cd /work/wt/mem-lean
BR=${BR:-/tmp/mem-lean-br1}
TAG=${TAG:-w1}
HOUT=benchmarks/results/memory/mem-lean
MOUT=benchmarks/results/mcp-memory/mem-lean
LOUT=benchmarks/results/issue14-regress/mem-lean
mkdir -p $HOUT $MOUT $LOUT
pp() { if [ $1 = main ]; then echo /tmp/mem-lean-main; else echo $BR; fi; }
for round in 1 2; do
  for who in main branch; do
    echo "=== hub memory $who round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$(pp $who) .venv/bin/python -m benchmarks memory --out $HOUT/$TAG-$who-$round 2>&1 | grep -E "^\[memory\]|Traceback|Error" 
  done
done
for round in 1 2; do
  for who in main branch; do
    echo "=== mcp-memory $who round $round $(date -u +%T) $(uptime)"
    PYTHONPATH=$(pp $who) .venv/bin/python -m benchmarks mcp-memory --client raw --sizes 1000 --eras legacy,modern --out $MOUT/$TAG-$who-$round 2>&1 | grep -vE "^server0: (DEBUG|INFO)" | tail -8
  done
done
if [ -n "$LAT" ]; then
for who in main branch; do
  echo "=== latency 10k $who $(date -u +%T) $(uptime)"
  PYTHONPATH=$(pp $who) .venv/bin/python -m benchmarks latency --sizes 10000 --rate 100 --out $LOUT/$TAG-$who 2>&1 | grep -E "^\[|Traceback|Error" | tail -6
done
fi
echo "=== end $(date -u +%T) $(uptime)"
