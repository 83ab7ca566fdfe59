"""A smoke-sized run of the webhooks benchmark (`python -m benchmarks.webhooks`), so it
never rots: real servers with 0, 1 and 10 endpoints, a receiver process, a few approvals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.bench


def test_webhooks_smoke_delivers_every_approval_to_every_endpoint_once(tmp_path: Path
                                                                       ) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COLAFLOW_") and k != "BENCH_INSTRUMENT"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.webhooks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "webhooks-smoke.json").read_text())
    assert [leg["endpoints"] for leg in data["legs"]] == [0, 1, 10]
    for leg in data["legs"]:
        assert leg["throughput"]["approvals_ok"] == data["approvals"]
        if leg["endpoints"]:
            lat = leg["latency"]
            assert lat["missing"] == 0 and lat["duplicates"] == 0
            assert lat["after_return_ms"]["count"] == leg["endpoints"] * data[
                "latency_decisions"]
