#!/bin/bash
cd /tmp
PY=/work/wt/backplane-lean/.venv/bin/python
for round in 1 2; do
 for v in branch2 branch; do
  for b in 1 4; do
   flock /work/wt/bench.lock bash -c "echo \"\$(date +%T) load \$(cut -d' ' -f1-3 /proc/loadavg) $v batch $b round $round\" >> /tmp/bl/out/micro2.txt; PYTHONPATH=/tmp/bl/$v $PY -m benchmarks.backplane_micro --events 10000 --batch $b --repeats 3 >> /tmp/bl/out/micro2.txt 2>&1"
  done
 done
done
