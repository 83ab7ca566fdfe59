#!/bin/bash
# A/B: main (/tmp/pg-onetrip-main) and the branch (/tmp/pg-onetrip-branch), alternating.
OUT=/work/wt/pg-onetrip/benchmarks/results/approvals/pg-onetrip
PY=/work/wt/pg-onetrip/.venv/bin/python
PG=postgresql://127.0.0.1:5432/test
log() { echo "$(date -u +%H:%M:%S) $* | $(uptime | sed 's/.*load average: //')" | tee -a $OUT/window.log; }
log "window start"
for r in 1 2; do
  for v in main branch; do
    cd /tmp/pg-onetrip-$v
    log "micro $v pg $r"
    $PY -m benchmarks.decide_micro --approvals 2000 --postgres-url $PG > $OUT/micro-$v-pg-$r.txt 2>&1
    log "micro $v sqlite $r"
    $PY -m benchmarks.decide_micro --approvals 2000 > $OUT/micro-$v-sqlite-$r.txt 2>&1
  done
done
for r in 1 2 3; do
  if [ $((r % 2)) = 1 ]; then order="main branch"; engines=sqlite,postgres; else order="branch main"; engines=postgres,sqlite; fi
  for v in $order; do
    cd /tmp/pg-onetrip-$v
    log "served $v $r ($engines)"
    $PY -m benchmarks.approvals --engines $engines --repeats 1 --out $OUT --name served-$v-$r > $OUT/served-$v-$r.log 2>&1
  done
done
log "window end"
