#!/bin/sh
# Two more approvals pairs (pair 1 was split: 1.08 vs 1.31 ms; pair 2: 1.01 vs 1.06).
D=/work/wt/tail10k/benchmarks/results/tail10k/tail10k
PY=/work/wt/tail10k/.venv/bin/python
for i in 3 4; do
  if [ $i = 3 ]; then ORDER="main slices"; else ORDER="slices main"; fi
  for side in $ORDER; do
    flock /work/wt/bench.lock sh -c "cd /tmp/tail10k_$side && echo \"start \$(cat /proc/loadavg)\" > $D/approvals/$side-$i.load; PYTHONPATH=/tmp/tail10k_$side $PY -m benchmarks.approvals --engines sqlite --no-burst --out $D/approvals --name $side-$i > $D/approvals/$side-$i.log 2>&1; echo \"end \$(cat /proc/loadavg)\" >> $D/approvals/$side-$i.load"
  done
done
