#!/bin/bash
# benchmarks/edge_micro.py (the same file copied into both trees) on main (d1dbfd6) and
# approve-raw, alternating, in one lock window: the edge alone (--stub), then the whole
# decision in-process on SQLite and on PostgreSQL. Run as: flock /work/wt/bench.lock ./run.sh
cd /tmp
PY=/work/wt/approve-raw/.venv/bin/python
OUT=/work/wt/approve-raw/benchmarks/results/approvals/approve-raw/edge-micro/runs.txt
PG=postgresql://127.0.0.1:5432/test
one() { # code name args...
  local v=$1 n=$2; shift 2
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $v $n $(PYTHONPATH=/tmp/abr/$v $PY -m benchmarks.edge_micro "$@" 2>/dev/null | tail -1)" >> $OUT
}
for pair in 1 2 3; do
  for v in main branch; do one $v stub --approvals 3000 --stub; done
  for v in branch main; do one $v stub --approvals 3000 --stub; done
  for v in main branch; do one $v sqlite --approvals 2000; done
  for v in branch main; do one $v postgres --approvals 2000 --postgres-url $PG; done
done
