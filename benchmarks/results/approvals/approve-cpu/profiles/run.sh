#!/bin/bash
cd /tmp
OUT=/tmp/ac/prof
PY=/work/wt/approve-cpu/.venv/bin/python
for v in b2; do
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $v prof-$v" >> $OUT/loads.txt
  PYTHONPATH=/tmp/ac/w2/$v:/tmp/ac/w2/bench $PY -m benchmarks.approvals --engines sqlite --no-burst --py-spy 8 --out $OUT --name prof-$v > $OUT/prof-$v.log 2>&1
done
echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) end" >> $OUT/loads.txt
