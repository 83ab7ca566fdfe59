#!/bin/bash
# Why does PostgreSQL run slower as the first engine of the benchmark process? PostgreSQL
# twice in one process (each with its own fresh database and server), three runs.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/window-1202e/pg-twice
cd /work/main
for n in 1 2 3; do
  echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) r$n" >> $OUT/loads.txt
  $PY -m benchmarks.approvals --engines postgres,postgres --no-burst --out $OUT --name r$n > $OUT/r$n.log 2>&1
done
