#!/bin/bash
# SQLite only: main, cut 1 (b1), cuts 1+2 (b2), rotating, one lock window; same benchmark code.
cd /tmp
OUT=/tmp/ac/ab2
PY=/work/wt/approve-cpu/.venv/bin/python
run() { # variant name
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $1 $2" >> $OUT/loads.txt
  PYTHONPATH=/tmp/ac/w2/$1:/tmp/ac/w2/bench $PY -m benchmarks.approvals --engines sqlite --no-burst --out $OUT --name $2 > $OUT/$2.log 2>&1
}
run main s1-main; run b1 s1-b1; run b2 s1-b2
run b2 s2-b2; run b1 s2-b1; run main s2-main
run b1 s3-b1; run main s3-main; run b2 s3-b2
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
