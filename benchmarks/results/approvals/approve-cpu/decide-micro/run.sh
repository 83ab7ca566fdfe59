#!/bin/bash
# decide_micro in-process: main vs branch (b2), alternating, SQLite and PostgreSQL.
cd /tmp
OUT=/tmp/ac/dm
PY=/work/wt/approve-cpu/.venv/bin/python
run() { # variant name args...
  v=$1; n=$2; shift 2
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $v $n" >> $OUT/loads.txt
  PYTHONPATH=/tmp/ac/w2/$v:/tmp/ac/w2/bench $PY -m benchmarks.decide_micro --approvals 2000 "$@" > $OUT/$n.txt 2>&1
}
PG="--postgres-url postgresql://127.0.0.1:5432/test"
for i in 1 2 3; do
  run main s$i-main; run b2 s$i-b2; run b2 p$i-b2 $PG; run main p$i-main $PG
done
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
