#!/bin/bash
# A/B: main vs branch snapshot, alternating, one lock window. usage: ab.sh OUTDIR BRANCHDIR
cd /tmp
OUT=$1; BR=$2
PY=/work/wt/approve-cpu/.venv/bin/python
run() { # codedir engines name
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $1 $2 $3" >> $OUT/loads.txt
  PYTHONPATH=$1 $PY -m benchmarks.approvals --engines $2 --no-burst --no-reference --out $OUT --name $3 > $OUT/$3.log 2>&1
}
run /tmp/ac/main sqlite,postgres p1-main
run $BR sqlite,postgres p1-branch
run $BR postgres,sqlite p2-branch
run /tmp/ac/main postgres,sqlite p2-main
run /tmp/ac/main sqlite,postgres p3-main
run $BR sqlite,postgres p3-branch
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
