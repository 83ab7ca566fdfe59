"""A smoke-sized run of the webhooks benchmark (`python -m benchmarks.webhooks`), so it
never rots: real servers with 0, 1 and 10 endpoints, a receiver process, a few approvals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.runner import run_module

pytestmark = pytest.mark.bench


@pytest.mark.timeout(320)
def test_webhooks_smoke_delivers_every_approval_to_every_endpoint_once(tmp_path: Path
                                                                       ) -> None:
    # Three legs of real servers: minutes on a loaded 2-core machine.
    run_module(["benchmarks.webhooks", "--smoke", "--out", str(tmp_path)], timeout=300)
    data = json.loads((tmp_path / "webhooks-smoke.json").read_text())
    assert [leg["endpoints"] for leg in data["legs"]] == [0, 1, 10]
    for leg in data["legs"]:
        assert leg["throughput"]["approvals_ok"] == data["approvals"]
        if leg["endpoints"]:
            lat = leg["latency"]
            assert lat["missing"] == 0 and lat["duplicates"] == 0
            assert lat["after_return_ms"]["count"] == leg["endpoints"] * data[
                "latency_decisions"]
