"""A smoke-sized run of the approvals benchmark over several tenants
(`python -m benchmarks.approvals --tenants N`): two instances on one PostgreSQL with Redis,
each tenant's decisions sent to its own instance, CPU per component measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.runner import run_module
from tests.harness import REDIS_URL, redis_address, require_service
from tests.pgdb import PG_ADMIN_URL, admin_address

pytestmark = [pytest.mark.bench, pytest.mark.postgres, pytest.mark.redis]


@pytest.mark.timeout(200)
def test_approvals_over_two_tenants_split_by_tenant_reach_both_instances(tmp_path: Path
                                                                         ) -> None:
    require_service("PostgreSQL", *admin_address())
    require_service("Redis", *redis_address())
    run_module(["benchmarks.approvals", "--smoke", "--engines", "postgres-2", "--tenants",
                "2", "--split", "tenant", "--postgres-url", PG_ADMIN_URL, "--redis-url",
                REDIS_URL, "--out", str(tmp_path), "--name", "smoke"], timeout=180)
    data = json.loads((tmp_path / "smoke.json").read_text())
    [run] = data["rounds"][0].values()
    assert (run["instances"], run["tenants"], run["split"]) == (2, 2, "tenant")
    steady = run["steady"]
    assert steady["ok"] == data["approvals"]
    assert steady["missing"] == 0 and steady["duplicates"] == 0
    # Subscribers of the second tenant are on the first instance: its events came by Redis.
    assert steady["decisions_per_instance"] == [data["approvals"] // 2] * 2
    components = steady["cpu"]["components"]
    assert {"instance0", "instance1", "postgres_backends", "load_generator"} <= components.keys()
    assert steady["cpu"]["machine"]["busy_cores"] > 0
