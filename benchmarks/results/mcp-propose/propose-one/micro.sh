#!/bin/bash
# In-process A/B, alternating main / branch (window.sh's micro runs imported the worktree's
# colaflow_mcp for both sides: `python -m` puts the current directory before PYTHONPATH;
# kept as micro-same-code-invalid.jsonl, a same-code spread). Run from /tmp so PYTHONPATH
# decides which colaflow_mcp is imported; the benchmarks package comes from the worktree.
OUT=/work/wt/propose-one/benchmarks/results/mcp-propose/propose-one
PY=/work/wt/propose-one/.venv/bin/python
cd /tmp
exec flock /work/wt/bench.lock bash -c '
for i in 1 2 3; do
  for side in main br; do
    PYTHONPATH=/tmp/propose-one-$side:/work/wt/propose-one '$PY' -m benchmarks.propose_micro --concurrency 1,8 --blocks 4 --size 400 | tee -a '$OUT'/micro-ab.jsonl
  done
done'
