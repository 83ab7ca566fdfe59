"""decide_micro (in-process, no HTTP) with the group-split instrument: the PostgreSQL group
split with nothing else on the event loop. Run from the code's directory:
PYTHONPATH=. BENCH_SPLIT_OUT=<file> python <this> --approvals 4000 --postgres-url URL"""
import runpy
import sys

from benchmarks import instrumented

instrumented._group_split()
sys.argv[0] = "decide_micro"
runpy.run_module("benchmarks.decide_micro", run_name="__main__")
