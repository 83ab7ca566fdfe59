#!/bin/bash
# The second window: the same runs as run.sh, but the whole window under one hold of the
# lock (several helpers were queued on it, so per-run locking left minutes between runs).
# Run as: flock /work/wt/bench.lock ./run-window.sh  (before: the git archives, as run.sh)
cd /tmp
PY=/work/wt/approve-raw/.venv/bin/python
OUT=/tmp/abr/out
run() { # code engines name
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $1 $2 $3" >> $OUT/loads.txt
  PYTHONPATH=/tmp/abr/$1 $PY -m benchmarks.approvals --engines $2 --no-burst --out $OUT \
    --name $3 > $OUT/$3.log 2>&1
}
run main sqlite,postgres p5-main
run branch postgres,sqlite p5-branch
run branch sqlite,postgres p6-branch
run main postgres,sqlite p6-main
run main sqlite,postgres p7-main
run branch postgres,sqlite p7-branch
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
