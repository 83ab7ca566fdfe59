"""A smoke-sized run of the approvals benchmark over several tenants
(`python -m benchmarks.approvals --tenants N`): two instances on one PostgreSQL with Redis,
each tenant's decisions sent to its own instance, CPU per component measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REDIS_URL, redis_address, require_service
from tests.pgdb import PG_ADMIN_URL, admin_address

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.bench, pytest.mark.postgres, pytest.mark.redis]


@pytest.mark.timeout(200)
def test_approvals_over_two_tenants_split_by_tenant_reach_both_instances(tmp_path: Path
                                                                         ) -> None:
    require_service("PostgreSQL", *admin_address())
    require_service("Redis", *redis_address())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COLAFLOW_") and k != "BENCH_INSTRUMENT"}
    # Its own process group: a run that overstays is killed with the servers it started.
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.approvals", "--smoke", "--engines", "postgres-2",
         "--tenants", "2", "--split", "tenant", "--postgres-url", PG_ADMIN_URL,
         "--redis-url", REDIS_URL, "--out", str(tmp_path), "--name", "smoke"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the approvals benchmark's smoke run took over 180 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-4000:]
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
