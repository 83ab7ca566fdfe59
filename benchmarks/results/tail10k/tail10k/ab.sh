#!/bin/sh
# A/B at 10,000 connections: main's colaflow_mcp against this branch's, alternating, each
# under the shared lock; the branch's benchmarks for both (git archive to /tmp).
# usage: ab.sh OUTDIR PAIRS [first: main|branch]
set -e
OUT=$1; PAIRS=$2; FIRST=${3:-main}
PY=/work/wt/tail10k/.venv/bin/python
mkdir -p "$OUT"
i=1
while [ $i -le "$PAIRS" ]; do
  if [ "$FIRST" = main ]; then ORDER="main branch"; else ORDER="branch main"; fi
  for side in $ORDER; do
    d="$OUT/$side-$i"
    flock /work/wt/bench.lock sh -c "cd /tmp/tail10k_$side && echo \"start \$(cat /proc/loadavg)\" > $d.load; PYTHONPATH=/tmp/tail10k_$side $PY -m benchmarks latency --sizes 10000 --rate 100 --out $d > $d.log 2>&1; echo \"end \$(cat /proc/loadavg)\" >> $d.load"
  done
  if [ "$FIRST" = main ]; then FIRST=branch; else FIRST=main; fi
  i=$((i+1))
done
