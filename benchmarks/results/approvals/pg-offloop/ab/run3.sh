#!/bin/bash
# The third pair (the first window was cut after two pairs to keep the lock under ~15 min).
cd /tmp
PY=/work/wt/pg-offloop/.venv/bin/python
run() { # code engines name
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $1 $2" >> /tmp/pgo/ab/out/loads.txt
  PYTHONPATH=/tmp/pgo/ab/$1 $PY -m benchmarks.approvals --engines $2 --no-burst --out /tmp/pgo/ab/out --name $3 > /tmp/pgo/ab/out/$3.log 2>&1
}
run main sqlite,postgres w3-main
run branch sqlite,postgres w3-branch
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> /tmp/pgo/ab/out/loads.txt
