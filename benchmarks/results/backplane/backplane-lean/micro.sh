#!/bin/bash
cd /tmp
PY=/work/wt/backplane-lean/.venv/bin/python
for round in 1 2; do
 for v in main branch; do
  for b in 1 4 16; do
   echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $v batch $b round $round" >> /tmp/bl/out/micro.txt
   PYTHONPATH=/tmp/bl/$v flock /work/wt/bench.lock $PY -m benchmarks.backplane_micro --events 10000 --batch $b --repeats 3 >> /tmp/bl/out/micro.txt 2>&1
  done
 done
done
