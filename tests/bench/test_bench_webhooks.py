"""A smoke-sized run of the webhooks benchmark (`python -m benchmarks.webhooks`), so it
never rots: real servers with 0, 1 and 10 endpoints, a receiver process, a few approvals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.bench


@pytest.mark.timeout(320)
def test_webhooks_smoke_delivers_every_approval_to_every_endpoint_once(tmp_path: Path
                                                                       ) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COLAFLOW_") and k != "BENCH_INSTRUMENT"}
    # Three legs of real servers: minutes on a loaded 2-core machine. Its own process
    # group, so a run that overstays is killed with the servers and receiver it started.
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.webhooks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the webhooks benchmark's smoke run took over 300 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-4000:]
    data = json.loads((tmp_path / "webhooks-smoke.json").read_text())
    assert [leg["endpoints"] for leg in data["legs"]] == [0, 1, 10]
    for leg in data["legs"]:
        assert leg["throughput"]["approvals_ok"] == data["approvals"]
        if leg["endpoints"]:
            lat = leg["latency"]
            assert lat["missing"] == 0 and lat["duplicates"] == 0
            assert lat["after_return_ms"]["count"] == leg["endpoints"] * data[
                "latency_decisions"]
