"""The system under test: `colaflow-mcp serve` as a subprocess, its provisioning, and meters.

Meters: server CPU seconds and RSS (psutil on the server pid, sampled in a thread) and TCP
payload bytes per socket (``ss -ti`` counters), so the load generator measures the server
from the outside and never shares its event loop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

VENV_BIN = Path(sys.executable).parent
COLAFLOW = str(VENV_BIN / "colaflow-mcp")
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit as far as allowed; returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_env(database_url: str, jwt_secret: str, extra: dict[str, str] | None = None
              ) -> dict[str, str]:
    """The server's environment: no inherited COLAFLOW_*, warnings-only logs; settings to
    compare go in ``BENCH_SERVER_ENV`` (``COLAFLOW_X=1 COLAFLOW_Y=2``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLAFLOW_")}
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    env.update({
        "COLAFLOW_DATABASE_URL": database_url,
        "COLAFLOW_JWT_SECRET": jwt_secret,
        "COLAFLOW_LOG_LEVEL": "warning",
        # One key plays every agent here (up to 10,000 connections): lift the per-key cap.
        "COLAFLOW_HUB_MAX_CONNECTIONS_PER_KEY": "1000000",
        # Every simulated agent uses the one benchmark key: lift the per-key session cap
        # (production default 100) to the SDK's overall one.
        "COLAFLOW_MCP_MAX_SESSIONS_PER_KEY": "10000",
    })
    env.update(extra or {})
    env.update(pair.split("=", 1) for pair in os.environ.get("BENCH_SERVER_ENV", "").split()
               if pair.startswith("COLAFLOW_") and "=" in pair)
    return env


@dataclass
class Credentials:
    api_key: str
    reviewer_token: str
    tenant: str


def provision(env: dict[str, str], cwd: Path, tenant: str = "bench") -> Credentials:
    """A tenant with a project WEB, an agent key and a reviewer token (via the CLI)."""

    def cli(*args: str) -> str:
        out = subprocess.run([COLAFLOW, *args], env=env, cwd=cwd, check=True,
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()

    key = json.loads(cli("keys", "create", "--tenant", tenant, "--name", "bench", "--json"))
    cli("projects", "create", "--tenant", tenant, "--key", "WEB", "--name", "Website")
    token = cli("token", "--tenant", tenant, "--user", "rita")
    return Credentials(api_key=key["key"], reviewer_token=token, tenant=tenant)


@dataclass
class Sample:
    t: float
    cpu_seconds: float
    rss_bytes: int


class Meter:
    """Samples one process's CPU time and RSS in a background thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> Sample:
        cpu = self.proc.cpu_times()
        return Sample(time.monotonic(), cpu.user + cpu.system, self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.read())
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def start(self) -> Meter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def series(self, t0: float) -> dict[str, list[float]]:
        """CPU utilisation (cores) and RSS (MiB) over time since ``t0``, for plots."""
        out: dict[str, list[float]] = {"t": [], "cpu": [], "rss_mib": []}
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            dt = b.t - a.t
            if dt <= 0:
                continue
            out["t"].append(round(b.t - t0, 3))
            out["cpu"].append(round((b.cpu_seconds - a.cpu_seconds) / dt, 3))
            out["rss_mib"].append(round(b.rss_bytes / 2**20, 2))
        return out


@dataclass
class ServerUnderTest:
    """A running `colaflow-mcp serve` with credentials and meters."""

    proc: subprocess.Popen[bytes]
    port: int
    creds: Credentials
    database_url: str
    workdir: Path
    log_path: Path
    extra_instances: list[ServerUnderTest] = field(default_factory=list)
    # Every provisioned tenant's credentials, ``creds`` first (``running_server(tenants=N)``).
    tenants: list[Credentials] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def meter(self, interval: float = 0.25) -> Meter:
        return Meter(self.pid, interval).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if os.environ.get("BENCH_INSTRUMENT") and self.log_path.exists():
            # The work folder is temporary: hand the instruments' lines to the caller.
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(("GCPAUSE", "GCTOTAL", "TM ")):
                    print(f"{self.log_path.stem}: {line}", file=sys.stderr)


def listening_port(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0
                   ) -> int:
    """The TCP port a server started with ``--port 0`` listens on, read from the OS.

    (Picking a free port here and passing it would leave a window for another process to
    take it; the servers log at warning level, so uvicorn's start-up line is not there.)
    """
    deadline = time.monotonic() + timeout
    process = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-4000:]}")
        ports = [c.laddr.port for c in process.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN]
        if ports:
            return int(ports[0])
        time.sleep(0.05)
    raise RuntimeError(f"server not listening after {timeout}s:\n"
                       f"{log_path.read_text()[-4000:]}")


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log_path: Path,
                 timeout: float = 60.0) -> None:
    """Poll /health until it answers 200 (the server's start-up, bounded)."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-4000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{log_path.read_text()[-4000:]}")


def start_instance(env: dict[str, str], workdir: Path, name: str = "server"
                   ) -> tuple[subprocess.Popen[bytes], int, Path]:
    log_path = workdir / f"{name}.log"
    command = [COLAFLOW]
    # See benchmarks/instrumented.py; ``bench_env`` passes the orchestrator's on, and a
    # scenario may set its own per server (``extra_env``).
    if env.get("BENCH_INSTRUMENT"):
        command = [sys.executable, "-m", "benchmarks.instrumented"]
        # After a PYTHONPATH given (e.g. another checkout's colaflow_mcp, to compare).
        env = {**env, "PYTHONPATH": os.pathsep.join(
            p for p in (env.get("PYTHONPATH"), str(REPO)) if p)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "serve", "--host", HOST, "--port", "0"],
            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        )
    port = listening_port(proc, log_path)
    wait_healthy(port, proc, log_path)
    return proc, port, log_path


@contextmanager
def running_server(workdir: Path, *, database_url: str | None = None,
                   extra_env: dict[str, str] | None = None, instances: int = 1,
                   tenants: int = 1) -> Iterator[ServerUnderTest]:
    """Provision a database and run ``instances`` servers on it (the first is primary).

    ``tenants`` > 1 provisions more tenants (``bench-2``, …), each with its own project
    ``WEB``, agent key and reviewer token, listed in ``ServerUnderTest.tenants``.
    """
    raise_fd_limit()  # inherited by the servers: 10,000 connections need 10,000 fds
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = database_url or f"sqlite:///{workdir / 'bench.db'}"
    env = bench_env(database_url, "bench-secret-" + uuid.uuid4().hex, extra_env)
    creds = provision(env, workdir)
    all_creds = [creds, *(provision(env, workdir, f"bench-{i + 1}") for i in range(1, tenants))]
    started: list[ServerUnderTest] = []
    try:
        for i in range(instances):
            proc, port, log_path = start_instance(env, workdir, f"server{i}")
            started.append(ServerUnderTest(proc, port, creds, database_url, workdir, log_path,
                                           tenants=all_creds))
        main = started[0]
        main.extra_instances = started[1:]
        yield main
    finally:
        for s in reversed(started):
            s.stop()


# -- seeding ---------------------------------------------------------------------------------

async def seed_changes(server: ServerUnderTest, count: int,
                       creds: Credentials | None = None) -> list[str]:
    """``count`` pending changes: one proposed over REST, the rest cloned from it in SQL.

    Proposals are set-up, not what is measured; cloning keeps set-up of tens of thousands of
    changes to seconds. Each clone is an ordinary ``create_issue`` pending change (of the
    tenant of ``creds``, by default the server's first).
    """
    from sqlalchemy import text

    from benchmarks.miniclient import MiniHttp
    from colaflow_mcp.store.engine import Database
    from colaflow_mcp.store.tables import PendingChange

    key = (creds or server.creds).api_key
    http = MiniHttp(HOST, server.port, {"Authorization": f"Bearer {key}"})
    template = await http.json("POST", "/api/mcp/pending-changes", {
        "tool": "create_issue",
        "arguments": {"project_key": "WEB", "title": "Benchmark issue"},
    }, expect=201)
    await http.close()
    ids = [template["id"]] + [str(uuid.uuid4()) for _ in range(count - 1)]
    table = PendingChange.__table__  # type: ignore[attr-defined]
    columns = [c.name for c in table.columns]
    others = ", ".join(c for c in columns if c != "id")
    sql = text(f"INSERT INTO {table.name} (id, {others}) "  # noqa: S608 (fixed names)
               f"SELECT :new_id, {others} FROM {table.name} WHERE id = :template")
    db = Database(server.database_url)
    try:
        for i in range(1, len(ids), 5000):
            async with db.write() as s:
                await s.execute(sql, [{"new_id": cid, "template": template["id"]}
                                      for cid in ids[i:i + 5000]])
    finally:
        await db.dispose()
    return ids


# -- bytes on the wire -----------------------------------------------------------------------

_SS_COUNTERS = re.compile(r"\b(bytes_acked|bytes_received|segs_out|segs_in):(\d+)")
_SS_ADDR = re.compile(r"^\S+\s+\S+\s+\S+:(\d+)\s+\S+:(\d+)")
# IPv4 (20) + TCP with timestamps (32) + the loopback device's Ethernet header (14).
HEADER_BYTES_PER_SEGMENT = 66


def tcp_counters(server_port: int, peer_ports: set[int]) -> dict[str, int]:
    """Server-side TCP counters summed over its sockets to ``peer_ports`` (``ss -ti``)."""
    ss = shutil.which("ss")
    if ss is None:
        return {}
    out = subprocess.run([ss, "-tinH", "state", "established", f"( sport = :{server_port} )"],
                         capture_output=True, text=True, timeout=60).stdout
    totals = {"bytes_acked": 0, "bytes_received": 0, "segs_out": 0, "segs_in": 0,
              "sockets": 0}
    current: int | None = None
    for line in out.splitlines():
        m = _SS_ADDR.match(line)
        if m is not None:
            current = int(m.group(2))
            continue
        if current is None or current not in peer_ports:
            continue
        totals["sockets"] += 1
        for name, value in _SS_COUNTERS.findall(line):
            totals[name] += int(value)
        current = None
    return totals


def wire_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Payload and estimated on-the-wire bytes between two ``tcp_counters`` snapshots."""
    if not before or not after:
        return {}
    payload = (after["bytes_acked"] - before["bytes_acked"]
               + after["bytes_received"] - before["bytes_received"])
    segments = after["segs_out"] - before["segs_out"] + after["segs_in"] - before["segs_in"]
    return {"payload_bytes": payload, "segments": segments,
            "wire_bytes": payload + segments * HEADER_BYTES_PER_SEGMENT}


def summary_cpu(before: Sample, after: Sample) -> dict[str, float]:
    wall = after.t - before.t
    cpu = after.cpu_seconds - before.cpu_seconds
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cpu_util": round(cpu / wall, 3) if wall > 0 else 0.0}


def ports_of(values: Sequence[Any]) -> set[int]:
    return {int(v) for v in values if v}


__all__ = ["ServerUnderTest", "running_server", "seed_changes", "tcp_counters"]
