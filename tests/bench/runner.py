"""Running a benchmark's real command from a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench_env() -> dict[str, str]:
    """This environment without the service's settings: the benchmark sets its own."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("COLAFLOW_") and k != "BENCH_INSTRUMENT"}


def run_module(args: list[str], timeout: float) -> None:
    """``python -m ARGS`` from the project root, in its own process group so that a run
    which overstays ``timeout`` is killed with the servers and workers it started; fails
    the test unless it exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"`python -m {args[0]}` took over {timeout:g} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-4000:]
