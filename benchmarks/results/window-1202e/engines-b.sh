#!/bin/bash
# 16.3 once more, later the same evening, on main after the newcomer merges (the decision
# path unchanged), nothing else running; engine order alternating.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/window-1202e/engines-b
cd /work/main
for n in 1 2 3 4 5 6; do
  if [ $((n % 2)) = 1 ]; then e=postgres,sqlite; else e=sqlite,postgres; fi
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) r$n $e" >> $OUT/loads.txt
  $PY -m benchmarks.approvals --engines $e --no-burst --out $OUT --name r$n > $OUT/r$n.log 2>&1
done
