#!/bin/sh
# backplane_micro: this branch's code with and without hiredis (redis-py's C reply parser,
# installed with pip --target /tmp/two-inst_hiredis and put on PYTHONPATH), alternating.
PY=/work/wt/two-inst/.venv/bin/python
OUT=${OUT:-/work/wt/two-inst/benchmarks/results/two-inst/two-inst/micro-hiredis.txt}
for round in 1 2; do
  for batch in 1 4; do
    for v in plain hiredis; do
      extra=""; [ $v = hiredis ] && extra=":/tmp/two-inst_hiredis"
      echo "## round=$round parser=$v batch=$batch load=$(cut -d' ' -f1 /proc/loadavg)" >> "$OUT"
      (cd /tmp/two-inst_branch && PYTHONPATH=/tmp/two-inst_branch$extra $PY -m benchmarks.backplane_micro \
        --events 10000 --batch $batch --repeats 2 --b-wants all >> "$OUT" 2>&1)
    done
  done
done
