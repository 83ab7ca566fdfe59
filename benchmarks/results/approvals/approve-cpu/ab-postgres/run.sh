#!/bin/bash
# PostgreSQL only: main vs branch (b2), alternating, one lock window; same benchmark code.
cd /tmp
OUT=/tmp/ac/ab3
PY=/work/wt/approve-cpu/.venv/bin/python
run() { # variant name
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $1 $2" >> $OUT/loads.txt
  PYTHONPATH=/tmp/ac/w2/$1:/tmp/ac/w2/bench $PY -m benchmarks.approvals --engines postgres --no-burst --no-reference --approvals 2000 --out $OUT --name $2 > $OUT/$2.log 2>&1
}
run main q1-main; run b2 q1-b2; run b2 q2-b2; run main q2-main; run main q3-main; run b2 q3-b2
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
