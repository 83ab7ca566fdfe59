#!/bin/bash
# Window 4: the second item's bound -- a held SSE GET in uvicorn's httptools stack against
# a bare asyncio protocol, 2,000 connections, two rounds alternating (this branch's
# benchmarks/held_get_micro.py; no colaflow code involved).
PY=/work/wt/legacy-get/.venv/bin/python
cd /tmp
echo "=== held_get_micro $(date -u +%T) $(uptime)"
PYTHONPATH=/tmp/lg-br2 timeout 300 $PY -m benchmarks.held_get_micro --connections 2000 --rounds 2
echo "=== end $(date -u +%T) $(uptime)"
