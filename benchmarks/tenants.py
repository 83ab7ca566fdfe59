"""Approvals spread over several tenants, and where the machine's CPU went meanwhile.

Used by ``python -m benchmarks.approvals --tenants N``: each tenant has its own project,
agent key and reviewer token (``running_server(tenants=N)``); its subscribers use its key
and its decisions its token. Decisions go to the instances either by tenant (``tenant``:
tenant ``t`` to instance ``t mod n``, as a sticky load balancer or a tenant-sharded
deployment would) or by lane (``round-robin``: lane ``k`` to instance ``k mod n``, as
before). ``CpuWindow`` snapshots every process's CPU time and ``/proc/stat`` so that a run
says what each component used and whether the machine's cores were all busy.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks.loadgen import Decision
from benchmarks.miniclient import MiniHttp
from benchmarks.server import HOST, Credentials, ServerUnderTest, seed_changes

SPLITS = ("tenant", "round-robin")


# -- seeding and deciding ------------------------------------------------------------------

@dataclass
class TenantLoad:
    """Changes, subscriber assignments and keys of a run over several tenants."""

    tenants: list[Credentials]
    change_ids: list[str] = field(default_factory=list)  # in assignment order
    assignments: list[list[str]] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)  # one per subscriber
    tenant_of: dict[str, int] = field(default_factory=dict)


async def seed_tenants(server: ServerUnderTest, subscribers: int, per: int) -> TenantLoad:
    """Subscriber ``a`` belongs to tenant ``a mod N`` and watches ``per`` of its changes."""
    tenants = server.tenants or [server.creds]
    load = TenantLoad(tenants)
    counts = [len(range(t, subscribers, len(tenants))) for t in range(len(tenants))]
    pools = [await seed_changes(server, counts[t] * per, creds) if counts[t] else []
             for t, creds in enumerate(tenants)]
    for t, ids in enumerate(pools):
        load.tenant_of.update(dict.fromkeys(ids, t))
    for a in range(subscribers):
        t = a % len(tenants)
        mine = pools[t][(a // len(tenants)) * per:(a // len(tenants) + 1) * per]
        load.assignments.append(mine)
        load.api_keys.append(tenants[t].api_key)
        load.change_ids.extend(mine)
    return load


def interleave(ids: list[str], tenant_of: dict[str, int]) -> list[str]:
    """``ids`` reordered so that consecutive decisions belong to consecutive tenants."""
    queues: dict[int, list[str]] = {}
    for cid in ids:
        queues.setdefault(tenant_of[cid], []).append(cid)
    order: list[str] = []
    columns = [queues[t] for t in sorted(queues)]
    for i in range(max((len(q) for q in columns), default=0)):
        order.extend(q[i] for q in columns if i < len(q))
    return order


async def decide_tenants(ports: list[int], load: TenantLoad, ids: list[str], concurrency: int,
                         split: str, hooks: tuple[Callable[[], Any], Callable[[], Any]]
                         | None = None) -> tuple[list[Decision], dict[int, int]]:
    """Closed loop: ``concurrency`` lanes approve ``ids`` (interleaved by tenant), each with
    its tenant's reviewer token, sent to an instance chosen by ``split``. Returns the
    decisions and how many went to each port. ``hooks``: called right before the first
    send and right after the last return (the CPU window's edges).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    order = interleave(ids, load.tenant_of)
    results: list[Decision] = []
    per_port = dict.fromkeys(ports, 0)
    next_index = 0

    async def lane(k: int) -> None:
        nonlocal next_index
        conns: dict[int, MiniHttp] = {}
        try:
            while next_index < len(order):
                cid = order[next_index]
                next_index += 1
                t = load.tenant_of[cid]
                port = ports[(t if split == "tenant" else k) % len(ports)]
                if port not in conns:
                    conns[port] = MiniHttp(HOST, port)
                    await conns[port].connect()
                auth = {"Authorization": f"Bearer {load.tenants[t].reviewer_token}"}
                started = time.monotonic()
                status, _ = await conns[port].request(
                    "POST", f"/api/mcp/pending-changes/{cid}/approve", None, auth)
                results.append(Decision(cid, started, time.monotonic(), status))
                per_port[port] += 1
        finally:
            for c in conns.values():
                await c.close()

    if hooks is not None:
        hooks[0]()
    await asyncio.gather(*(lane(k) for k in range(max(1, min(concurrency, len(order))))))
    if hooks is not None:
        hooks[1]()
    return results, per_port


def tenant_decider(ports: list[int], load: TenantLoad, concurrency: int, split: str,
                   window: CpuWindow | None, counts: dict[int, int]
                   ) -> Callable[[list[str]], Awaitable[list[Decision]]]:
    """``decide_tenants`` as ``run_load``'s decider; the port counts land in ``counts``."""

    async def run(ids: list[str]) -> list[Decision]:
        hooks = (window.start, window.stop) if window is not None else None
        decisions, per_port = await decide_tenants(ports, load, ids, concurrency, split, hooks)
        counts.update(per_port)
        return decisions

    return run


# -- CPU: every process, and the machine ----------------------------------------------------

def pin_instances(pids: list[int], cpus: list[int]) -> list[int]:
    """Instance ``i`` (every thread; later ones inherit it) onto CPU ``cpus[i mod len]``."""
    placed = []
    for i, pid in enumerate(pids):
        cpu = cpus[i % len(cpus)]
        for thread in psutil.Process(pid).threads():
            os.sched_setaffinity(thread.id, {cpu})
        placed.append(cpu)
    return placed


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def _cpu_jiffies() -> list[int]:
    """Busy clock ticks of each CPU since boot (``cpuN`` lines of ``/proc/stat``)."""
    busy = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                busy.append(sum(v) - v[3] - v[4])
    return busy


def _group(p: psutil.Process, instances: dict[int, str], me: int, db_name: str | None
           ) -> str | None:
    pid = p.info["pid"]
    if pid in instances:
        return instances[pid]
    if pid == me:
        return "load_generator"
    name = p.info["name"] or ""
    cmd = " ".join(p.info["cmdline"] or [])
    if name == "postgres":
        if db_name is not None and f" {db_name} " in f"{cmd} ":
            return "postgres_backends"
        if "(" in cmd or "[local]" in cmd:  # a client backend of some other database
            return "postgres_other_dbs"
        return "postgres_shared"  # postmaster, WAL writer, checkpointer, …
    if name.startswith("redis-server"):
        return "redis"
    if "benchmarks.worker" in cmd:
        return "subscribers"
    return None


class CpuWindow:
    """CPU seconds per component over a window: psutil per process, ``/proc/stat`` overall.

    Components: each instance, this database's PostgreSQL backends, PostgreSQL's shared
    processes, other databases' backends, Redis, the load generator (this process) and the
    subscriber workers; ``other`` is the machine's busy time nobody of those used.
    """

    def __init__(self, instance_pids: list[int], db_name: str | None) -> None:
        self.instances = {pid: f"instance{i}" for i, pid in enumerate(instance_pids)}
        self.db_name = db_name
        self._t0 = self._t1 = 0.0
        self._a: dict[int, tuple[str, float]] = {}
        self._b: dict[int, tuple[str, float]] = {}
        self._m0 = self._m1 = (0, 0)
        self._c0: list[int] = []
        self._c1: list[int] = []
        # Called right after the window opens and right before it closes (profilers,
        # the instances' stage counters).
        self.edge_hooks: list[tuple[Callable[[], Any], Callable[[], Any]]] = []
        self._cs_a: dict[int, int] = {}
        self._cs_b: dict[int, int] = {}

    def _snapshot(self, switches: dict[int, int] | None = None
                  ) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        me = os.getpid()
        for p in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                group = _group(p, self.instances, me, self.db_name)
                if group is not None:
                    t = p.cpu_times()
                    out[p.info["pid"]] = (group, t.user + t.system)
                    if switches is not None:  # voluntary: how often it blocked (woke up)
                        switches[p.info["pid"]] = p.num_ctx_switches().voluntary
            except psutil.Error:
                pass
        return out

    def start(self) -> None:
        self._a = self._snapshot(self._cs_a)
        self._m0 = _machine_jiffies()
        self._c0 = _cpu_jiffies()
        self._t0 = time.monotonic()
        for opened, _ in self.edge_hooks:
            opened()

    def stop(self) -> None:
        for _, closing in self.edge_hooks:
            closing()
        self._t1 = time.monotonic()
        self._m1 = _machine_jiffies()
        self._c1 = _cpu_jiffies()
        self._b = self._snapshot(self._cs_b)

    def result(self, approvals: int) -> dict[str, Any]:
        """Per component: CPU seconds, cores (seconds / wall) and ms per approval."""
        wall = self._t1 - self._t0
        groups: dict[str, float] = {}
        wakeups: dict[str, int] = {}
        for pid, (group, cpu) in self._b.items():
            if pid in self._cs_b:
                wakeups[group] = (wakeups.get(group, 0) + self._cs_b[pid]
                                  - self._cs_a.get(pid, 0))
            before = self._a.get(pid)
            # A process born inside the window counts whole; one that died in it is lost
            # (pools keep their connections, so neither happens in a steady run).
            groups[group] = groups.get(group, 0.0) + cpu - (before[1] if before else 0.0)
        tick = os.sysconf("SC_CLK_TCK")
        busy = (self._m1[0] - self._m0[0]) / tick
        total = (self._m1[1] - self._m0[1]) / tick
        groups["other"] = busy - sum(groups.values())
        n = max(1, approvals)
        return {
            "wall_s": round(wall, 3),
            "machine": {"cpus": os.cpu_count(), "busy_cores": round(busy / wall, 3),
                        "busy_per_cpu": [round((b - a) / tick / wall, 3)
                                         for a, b in zip(self._c0, self._c1, strict=True)],
                        "busy_share": round(busy / total, 3) if total else None,
                        "busy_ms_per_approval": round(busy * 1000 / n, 3)},
            "components": {g: {"cpu_s": round(v, 3), "cores": round(v / wall, 3),
                               "ms_per_approval": round(v * 1000 / n, 3),
                               **({"wakeups_per_approval": round(wakeups[g] / n, 2)}
                                  if g in wakeups else {})}
                           for g, v in sorted(groups.items())},
        }
