#!/bin/sh
# Two more approvals pairs, main against the final branch (Fix 1 only: caa7e22's colaflow_mcp).
D=/work/wt/tail10k/benchmarks/results/tail10k/tail10k
PY=/work/wt/tail10k/.venv/bin/python
for i in 9 10; do
  if [ $i = 9 ]; then ORDER="eager main"; else ORDER="main eager"; fi
  for side in $ORDER; do
    flock /work/wt/bench.lock sh -c "cd /tmp/tail10k_$side && echo \"start \$(cat /proc/loadavg)\" > $D/approvals/$side-$i.load; PYTHONPATH=/tmp/tail10k_$side $PY -m benchmarks.approvals --engines sqlite --no-burst --out $D/approvals --name $side-$i > $D/approvals/$side-$i.log 2>&1; echo \"end \$(cat /proc/loadavg)\" >> $D/approvals/$side-$i.load"
  done
done
