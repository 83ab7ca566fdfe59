#!/bin/bash
# main (d1dbfd6) against approve-raw (HEAD), alternating ABBA, engines' order alternating;
# each run under the shared benchmark lock, the lock released between runs.
# Before: git archive <commit> | tar -x -C /tmp/abr/<main|branch>
cd /tmp
PY=/work/wt/approve-raw/.venv/bin/python
OUT=/tmp/abr/out
run() { # code engines name
  flock /work/wt/bench.lock bash -c "
    echo \"\$(date +%T) load \$(cut -d' ' -f1-3 /proc/loadavg) $1 $2 $3\" >> $OUT/loads.txt
    PYTHONPATH=/tmp/abr/$1 $PY -m benchmarks.approvals --engines $2 --no-burst --out $OUT --name $3 > $OUT/$3.log 2>&1"
}
run main sqlite,postgres p1-main
run branch postgres,sqlite p1-branch
run branch sqlite,postgres p2-branch
run main postgres,sqlite p2-main
run main sqlite,postgres p3-main
run branch postgres,sqlite p3-branch
run branch sqlite,postgres p4-branch
run main postgres,sqlite p4-main
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
