#!/bin/sh
# backplane_micro A/B: main's and this branch's colaflow_mcp (git archive'd under /tmp,
# the branch's benchmarks in both), B with no subscriber for the changes (--b-wants none)
# and with all (--b-wants all); alternating, under the shared lock.
PY=/work/wt/two-inst/.venv/bin/python
OUT=${OUT:-/work/wt/two-inst/benchmarks/results/two-inst/two-inst/micro.txt}
for round in 1 2; do
  for wants in none all; do
    for v in main branch; do
      echo "## round=$round version=$v b_wants=$wants load=$(cut -d' ' -f1 /proc/loadavg)" >> "$OUT"
      (cd /tmp/two-inst_$v && PYTHONPATH=/tmp/two-inst_$v $PY -m benchmarks.backplane_micro \
        --events 10000 --batch 4 --repeats 2 --b-wants $wants >> "$OUT" 2>&1)
    done
  done
done
