"""Smoke-sized runs of every benchmark scenario, so the benchmarks never rot.

Each runs the real command (``python -m benchmarks SCENARIO --smoke``): a real server
process, worker processes, a handful of agents, a few decisions, seconds in all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench.runner import bench_env
from tests.harness import REDIS_URL, absent, redis_address, require_service
from tests.pgdb import PG_ADMIN_URL, admin_address

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.bench


def run_scenario(name: str, out: Path, extra_env: dict[str, str] | None = None,
                 *args: str) -> dict[str, Any]:
    env = bench_env()
    env.update(extra_env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", name, "--smoke", "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data: dict[str, Any] = json.loads((out / f"{name}-smoke.json").read_text())
    return data


def assert_all_delivered(run: dict[str, Any]) -> None:
    assert run["ready"] == run["agents"], run["connect_errors"]
    assert run["decisions_ok"] == run["decisions"] > 0
    assert run["delivered"] == run["decisions_ok"]
    assert run["missing"] == 0 and run["duplicates"] == 0
    assert run["latency_ms"]["p99"] is not None


def test_latency_smoke_delivers_every_decision_to_hub_subscribers(tmp_path: Path) -> None:
    data = run_scenario("latency", tmp_path)
    for run in data["runs"]:
        assert_all_delivered(run)
        assert run["rss_per_connection_kib"] is not None


def test_throughput_smoke_finds_a_sustained_rate(tmp_path: Path) -> None:
    data = run_scenario("throughput", tmp_path)
    for step in data["steps"]:
        assert_all_delivered(step)
    assert data["max_sustained"] is not None
    assert data["decide_only"]["decisions_ok"] > 0


def test_mcp_smoke_delivers_on_both_eras(tmp_path: Path) -> None:
    data = run_scenario("mcp", tmp_path)
    assert {r["kind"] for r in data["runs"]} == {"mcp-legacy", "mcp-modern"}
    for run in data["runs"]:
        assert_all_delivered(run)


def test_push_vs_poll_smoke_measures_bytes_and_cpu_of_both(tmp_path: Path) -> None:
    data = run_scenario("push-vs-poll", tmp_path)
    for kind in ("hub-ws", "poll"):
        assert_all_delivered(data[kind])
        assert data[kind]["wire"]["payload_bytes"] > 0
    assert data["ratios"]["wire_bytes"] is not None


def test_peer_smoke_runs_socketio_and_our_hub_side_by_side(tmp_path: Path) -> None:
    data = run_scenario("peer", tmp_path)
    runs = data["repeats"]
    # Each server goes first in turn.
    assert [r["order"] for r in runs] == [["ours", "socketio"], ["socketio", "ours"]]
    for run in runs:
        assert_all_delivered(run["ours"])
        assert_all_delivered(run["socketio"])
    # (At smoke size the CPU figures are a few 10 ms ticks: ratios may well be None.)
    assert len(data["cpu_ratio_all_in"]["runs"]) == 2
    assert len(data["cpu_ratio_net_of_deciding"]["runs"]) == 2


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_smoke_delivers_across_two_instances(tmp_path: Path) -> None:
    require_service("PostgreSQL", *admin_address())
    require_service("Redis", *redis_address())
    data = run_scenario("redis", tmp_path, None, "--redis-url", REDIS_URL,
                        "--postgres-url", PG_ADMIN_URL)
    assert_all_delivered(data["same_instance"])
    assert_all_delivered(data["other_instance"])


def test_memory_smoke_measures_rss_per_connection(tmp_path: Path) -> None:
    data = run_scenario("memory", tmp_path)
    assert data["ready"] == data["connections"]
    assert data["rss_per_connection_kib"] is not None


def test_instrumented_server_still_delivers(tmp_path: Path) -> None:
    """The experiment hooks (benchmarks/instrumented.py) patch private APIs: keep them honest."""
    data = run_scenario("latency", tmp_path,
                        {"BENCH_INSTRUMENT": "gc-log,gc-tune,tracemalloc"})
    for run in data["runs"]:
        assert_all_delivered(run)


def test_transaction_micro_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.transact_micro", "--transactions", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ms per transaction" in proc.stdout


@pytest.mark.parametrize("stub", [False, True])
def test_edge_micro_benchmark_approves_every_change(stub: bool) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.edge_micro", "--approvals", "40",
         *(["--stub"] if stub else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["approvals"], out["failed"], out["stub"]) == (40, 0, stub)
    assert out["cpu_ms_per_approval"] > 0


def test_audit_smoke_measures_both_legs_and_only_one_writes_entries(tmp_path: Path) -> None:
    data = run_scenario("audit", tmp_path)
    [run] = data["rounds"]
    for leg in ("audit-on", "audit-off"):
        assert run[leg]["proposals"]["proposals_ok"] == data["count"]
        assert run[leg]["decisions"]["decisions_ok"] == data["count"]
    # The CLI's key.created is the off leg's only entry; the on leg has one per proposal,
    # rejection and expiry and two per approval (approved, executed).
    assert run["audit-off"]["audit_entries"] == 1
    assert run["audit-on"]["audit_entries"] > 2 * data["count"]
    assert data["summary"]["decisions"]["cpu_ms"]["difference"]["median"] is not None


def test_mcp_memory_smoke_holds_every_client_of_both_eras(tmp_path: Path) -> None:
    data = run_scenario("mcp-memory", tmp_path)
    assert [r["era"] for r in data["runs"]] == ["legacy", "modern"]
    for run in data["runs"]:
        assert run["ready"] == run["clients"] > 0
        assert run["rss_per_client_kib"] is not None


def test_mcp_memory_raw_client_sessions_are_held_and_get_their_updates(tmp_path: Path
                                                                        ) -> None:
    data = run_scenario("mcp-memory", tmp_path, None, "--client", "raw", "--verify", "2")
    assert [r["era"] for r in data["runs"]] == ["legacy", "modern"]
    for run in data["runs"]:
        assert run["client"] == "raw"
        assert run["ready"] == run["clients"] > 0 and run["failed"] == 0, run["errors"]
        assert run["verified"] == {**run["verified"], "approved": 2, "sample": 2,
                                   "all_delivered": True}
        assert run["server_errors"] == []


def test_mcp_memory_warm_mcp_reads_the_baseline_after_a_burst_of_clients(tmp_path: Path
                                                                         ) -> None:
    data = run_scenario("mcp-memory", tmp_path, None, "--client", "raw", "--eras", "modern",
                        "--warm-mcp", "2", "--verify", "2")
    [run] = data["runs"]
    assert run["warm_mcp"] == 2 and run["ready"] == run["clients"] > 0 and run["failed"] == 0
    assert run["verified"]["all_delivered"] and run["server_errors"] == []


def test_the_memory_probe_reads_every_step_and_what_the_collector_finds(tmp_path: Path
                                                                        ) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.mcp_memory_probe", "--steps", "1,3", "--settle",
         "0", "--collect-last", "--out", str(tmp_path)],
        cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    marks = json.loads((tmp_path / "marks.json").read_text())
    assert [m["label"] for m in marks] == ["idle", "1", "3"]
    assert all(m["before"]["VmRSS"] > 0 and "pymalloc_arenas" in m["before"] for m in marks)
    assert marks[-1]["ready_in_step"] == 2 and "after_trim" in marks[-1]
    assert "after_trim" not in marks[1] and isinstance(marks[-1]["garbage"], list)


def test_storm_smoke_reconnects_every_client_of_ours_and_the_peer(tmp_path: Path) -> None:
    data = run_scenario("storm", tmp_path)
    assert sorted(r["server"] for r in data["runs"]) == ["ours", "sio"]
    for run in data["runs"]:
        assert run["ready"] == run["clients"] > 0 and run["failed"] == 0, run["errors"]
        assert run["server_cpu_s"] >= 0


def test_storm_node_clients_reconnect_every_client_of_ours_and_the_peer(tmp_path: Path
                                                                        ) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        absent("node and npm are needed for the storm's Node.js clients")
    data = run_scenario("storm", tmp_path, None, "--client", "node")
    assert data["client"] == "node"
    assert sorted(r["server"] for r in data["runs"]) == ["ours", "sio"]
    for run in data["runs"]:
        assert run["client"] == "node"
        assert run["ready"] == run["clients"] > 0 and run["failed"] == 0, run["errors"]
        assert run["client_cpu_s"] is not None and run["client_cpu_s"] > 0


def test_mcp_propose_compares_with_the_bare_sdk_peer(tmp_path: Path) -> None:
    out = tmp_path / "propose.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.mcp_propose", "--sessions", "1,2", "--calls", "10",
         "--rounds", "1", "--eras", "modern", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())
    assert sorted((r["server"], r["sessions"]) for r in rows) == [
        ("bare", 1), ("bare", 2), ("ours", 1), ("ours", 2)]
    assert all(r["errors"] == 0 and r["server_cpu_ms_per_call"] >= 0 for r in rows)
    assert "| modern | 1 |" in proc.stdout
