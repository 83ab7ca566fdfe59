#!/bin/bash
OUT=/work/wt/pg-onetrip/benchmarks/results/approvals/pg-onetrip/window3
mkdir -p $OUT
PY=/work/wt/pg-onetrip/.venv/bin/python
PG=postgresql://127.0.0.1:5432/test
log() { echo "$(date -u +%H:%M:%S) $* | $(uptime | sed 's/.*load average: //')" | tee -a $OUT/window.log; }
log "window start"
for r in 1 2 3 4 5; do
  if [ $((r % 2)) = 1 ]; then order="main branch"; else order="branch main"; fi
  for v in $order; do
    cd /tmp/pg-onetrip-$v
    log "micro $v pg $r"
    $PY -m benchmarks.decide_micro --approvals 2000 --postgres-url $PG > $OUT/micro-$v-pg-$r.txt 2>&1
  done
done
for r in 1 2 3; do
  for v in main branch; do
    cd /tmp/pg-onetrip-$v
    log "stmt $v $r"
    $PY /tmp/pg-onetrip-stmt.py /tmp/pg-onetrip-$v >> $OUT/stmt.txt 2>&1
  done
done
log "window end"
