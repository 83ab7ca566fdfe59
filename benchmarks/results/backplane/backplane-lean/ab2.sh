#!/bin/bash
# main (d1dbfd6's code) against backplane-lean, alternating; engines' order alternating too.
cd /tmp
PY=/work/wt/backplane-lean/.venv/bin/python
OUT=/tmp/bl/ab
run() { # code engines name
  flock /work/wt/bench.lock bash -c "
    echo \"\$(date +%T) load \$(cut -d' ' -f1-3 /proc/loadavg) $1 $2 $3\" >> $OUT/loads.txt
    PYTHONPATH=/tmp/bl/$1 $PY -m benchmarks.approvals --engines $2 --tenants 8 --split tenant \
      --no-burst --no-reference --out $OUT --name $3 > $OUT/$3.log 2>&1
    echo \"\$(date +%T) load \$(cut -d' ' -f1-3 /proc/loadavg) $1 done $3\" >> $OUT/loads.txt"
}
while pgrep -f /tmp/bl/ab.sh > /dev/null; do sleep 5; done
run branch2 postgres-redis,postgres-2 p4-branch
run main postgres-2,postgres-redis p4-main
run main postgres-redis,postgres-2 p5-main
run branch2 postgres-2,postgres-redis p5-branch
