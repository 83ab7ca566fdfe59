#!/bin/sh
# One round of the per-core measurement: one instance with Redis (postgres-redis) and two
# instances (postgres-2, by tenant), on two cores and on ONE core (every process of the
# run on CPU 0: the load generator, the subscribers' worker and the instances by
# inheritance from `taskset -c`, a private PostgreSQL cluster (port 5499, started by
# pg_ctl as the system one is configured: fsync on, autovacuum off, 128MB) and a private
# Redis (port 6399), both re-pinned with `taskset -a -p` before each run; new backends
# inherit the postmaster's affinity). Usage: scale.sh ROUND [CODE_DIR]
set -e
ROUND=$1; CODE=${2:-/tmp/two-inst_branch}
PY=/work/wt/two-inst/.venv/bin/python
OUT=/work/wt/two-inst/benchmarks/results/two-inst/two-inst/scale
mkdir -p $OUT
PGPID=$(head -1 /tmp/two-inst_pg/data/postmaster.pid); RPID=$(cat /tmp/two-inst_redis.pid)
if [ $((ROUND % 2)) = 1 ]; then MODES="0,1 0"; ENG=postgres-redis,postgres-2
else MODES="0 0,1"; ENG=postgres-2,postgres-redis; fi
for cpus in $MODES; do
  for pid in $PGPID $(ps -o pid= --ppid $PGPID) $RPID; do taskset -a -p -c $cpus $pid >/dev/null; done
  name=scale-cpus$(echo $cpus | tr -d ,)-r$ROUND
  echo "$name start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/loads.txt
  (cd $CODE && PYTHONPATH=$CODE BENCH_INSTRUMENT=stages BENCH_STAGES_OUT=/tmp/two-inst_st/$name \
    taskset -c $cpus $PY -m benchmarks.approvals --engines $ENG --tenants 8 --split tenant \
    --no-burst --no-reference --postgres-url postgresql://postgres@127.0.0.1:5499/postgres \
    --redis-url redis://127.0.0.1:6399/0 --out $OUT --name $name > $OUT/$name.log 2>&1)
  echo "$name end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/loads.txt
done
for pid in $PGPID $(ps -o pid= --ppid $PGPID) $RPID; do taskset -a -p -c 0,1 $pid >/dev/null; done
