#!/bin/sh
# Served A/B, two instances only: main's and this branch's colaflow_mcp alternating
# (private PostgreSQL 5499 and Redis 6399, two cores), each run under the shared lock.
PY=/work/wt/two-inst/.venv/bin/python
OUT=/work/wt/two-inst/benchmarks/results/two-inst/two-inst/ab
for round in ${ROUNDS:-1 2}; do
  if [ $((round % 2)) = 1 ]; then ORDER="main branch"; else ORDER="branch main"; fi
  for v in $ORDER; do
    echo "$v-r$round start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/loads.txt
    (cd /tmp/two-inst_$v && PYTHONPATH=/tmp/two-inst_$v BENCH_INSTRUMENT=stages \
      BENCH_STAGES_OUT=/tmp/two-inst_st/ab-$v-r$round flock /work/wt/bench.lock \
      $PY -m benchmarks.approvals --engines postgres-2 --tenants 8 --split tenant \
      --no-burst --no-reference --postgres-url postgresql://postgres@127.0.0.1:5499/postgres \
      --redis-url redis://127.0.0.1:6399/0 --out $OUT --name $v-r$round > $OUT/$v-r$round.log 2>&1)
  done
done
