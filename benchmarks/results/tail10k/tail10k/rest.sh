#!/bin/sh
# After ab-eager: approvals main vs branch (2 pairs), memory once per side, one traced run
# of the branch head, then the timer-slices A/B (eager-only caa7e22 against the head).
D=/work/wt/tail10k/benchmarks/results/tail10k/tail10k
PY=/work/wt/tail10k/.venv/bin/python
mkdir -p $D/approvals
for i in 1 2; do
  if [ $i = 1 ]; then ORDER="main slices"; else ORDER="slices main"; fi
  for side in $ORDER; do
    flock /work/wt/bench.lock sh -c "cd /tmp/tail10k_$side && echo \"start \$(cat /proc/loadavg)\" > $D/approvals/$side-$i.load; PYTHONPATH=/tmp/tail10k_$side $PY -m benchmarks.approvals --engines sqlite --no-burst --out $D/approvals --name $side-$i > $D/approvals/$side-$i.log 2>&1; echo \"end \$(cat /proc/loadavg)\" >> $D/approvals/$side-$i.load"
  done
done
for side in main slices; do
  flock /work/wt/bench.lock sh -c "cd /tmp/tail10k_$side && echo \"start \$(cat /proc/loadavg)\" > $D/memory-$side.load; PYTHONPATH=/tmp/tail10k_$side $PY -m benchmarks memory --out $D/memory-$side > $D/memory-$side.log 2>&1"
done
mkdir -p $D/trace-branch-1
flock /work/wt/bench.lock sh -c "cd /tmp/tail10k_slices && echo \"start \$(cat /proc/loadavg)\" > $D/trace-branch-1.load; BENCH_INSTRUMENT=tail-trace BENCH_TRACE_OUT=$D/trace-branch-1/trace.tt BENCH_WORKER_TRACE=$D/trace-branch-1/trace.tt PYTHONPATH=/tmp/tail10k_slices $PY -m benchmarks latency --sizes 10000 --rate 100 --out $D/trace-branch-1 > $D/trace-branch-1.log 2>&1"
$D/ab_sides.sh $D/ab-slices 3 eager slices
echo all done
