"""Several `colaflow-mcp serve` processes on one PostgreSQL database and one Redis."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests import pgdb
from tests.harness import REDIS_URL, redis_address, redis_url_at, require_service
from tests.netproxy import TcpProxy
from tests.pgdb import pg_database
from tests.procs import AsyncServe, ServerProcess, cli_env

FAST_ENV = {
    "COLAFLOW_EXPIRY_MAX_WAIT_SECONDS": "0.2",
    "COLAFLOW_ANNOUNCE_SWEEP_INTERVAL_SECONDS": "0.2",
    "COLAFLOW_ANNOUNCE_GRACE_SECONDS": "0.5",
    "COLAFLOW_RECONCILE_INTERVAL_SECONDS": "1.0",
    "COLAFLOW_BUS_RECONNECT_MAX_BACKOFF_SECONDS": "0.3",
    "COLAFLOW_API_KEY_CACHE_SECONDS": "0",
    # Short enough that a client without keep-alive pings is closed within a test.
    "COLAFLOW_HUB_CLIENT_TIMEOUT_SECONDS": "10",
    # Each recovery-loop pass is logged (recovery_passes waits on those lines).
    "COLAFLOW_LOG_LEVEL": "info,colaflow_mcp.supervisor=debug",
}


@dataclass
class Remote:
    """One instance as a client sees it (``base_url`` is what the MCP helpers need)."""

    server: ServerProcess
    client: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def hub_url(self) -> str:
        return self.server.base_url.replace("http://", "ws://") + "/hubs/mcp"


@dataclass
class Cluster:
    tmp: Path
    env: dict[str, str]
    proxy: TcpProxy
    key: str
    token: str
    instances: list[Remote] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        out = subprocess.run(["colaflow-mcp", *args], cwd=self.tmp, env=cli_env(self.env),
                             capture_output=True, text=True, check=True, timeout=60)
        return out.stdout.strip()

    async def propose(self, via: Remote, title: str, expires_in: float | None = None
                      ) -> str:
        body: dict[str, Any] = {"tool": "create_issue",
                                "arguments": {"project_key": "WEB", "title": title}}
        if expires_in is not None:
            body["expiresInSeconds"] = expires_in
        r = await via.client.post("/api/mcp/pending-changes", json=body,
                                  headers={"Authorization": f"Bearer {self.key}"})
        assert r.status_code == 201, r.text
        cid: str = r.json()["id"]
        return cid

    async def decide(self, via: Remote, change_id: str, how: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        if how == "approve":
            return await via.client.post(f"/api/mcp/pending-changes/{change_id}/approve",
                                         headers=headers)
        return await via.client.post(f"/api/mcp/pending-changes/{change_id}/reject",
                                     json={"reason": f"no ({change_id[:8]})"}, headers=headers)

    async def status(self, change_id: str) -> str:
        r = await self.instances[-1].client.get(
            f"/api/mcp/pending-changes/{change_id}",
            headers={"Authorization": f"Bearer {self.token}"})
        s: str = r.json()["status"]
        return s

    @asynccontextmanager
    async def instance(self, **env: str) -> AsyncIterator[Remote]:
        """Start one more instance (extra COLAFLOW_* variables allowed)."""
        async with AsyncServe({**self.env, **env}, self.tmp) as server, \
                httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            remote = Remote(server, client)
            self.instances.append(remote)
            try:
                yield remote
            finally:
                self.instances.remove(remote)


@asynccontextmanager
async def cluster(tmp: Path, redis_url: str | None = None) -> AsyncIterator[Cluster]:
    """Database, Redis (through a cuttable proxy), a tenant with a key, token and project.

    ``redis_url``: the instances use this Redis directly instead (a test's own
    redis-server, which it stops and starts); the proxy then forwards to it unused.
    """
    if redis_url is None:
        require_service("Redis", *redis_address())
    require_service("PostgreSQL", *pgdb.admin_address())
    async with pg_database() as db_url, anyio.create_task_group() as tg:
        proxy = TcpProxy(*redis_address(redis_url or REDIS_URL))
        port = await tg.start(proxy.run)
        env = {
            **FAST_ENV,
            "COLAFLOW_DATABASE_URL": db_url,
            "COLAFLOW_REDIS_URL": redis_url or redis_url_at("127.0.0.1", port, REDIS_URL),
            "COLAFLOW_REDIS_CHANNEL": f"colaflow-test:{uuid.uuid4().hex}",
            "COLAFLOW_JWT_SECRET": "cluster-secret-" + uuid.uuid4().hex,
        }
        c = Cluster(tmp, env, proxy, key="", token="")

        def bootstrap() -> None:
            c.key = json.loads(c.cli("keys", "create", "--tenant", "acme", "--json"))["key"]
            c.token = c.cli("token", "--tenant", "acme", "--user", "alice")
            c.cli("projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")

        await anyio.to_thread.run_sync(bootstrap)
        try:
            yield c
        finally:
            tg.cancel_scope.cancel()


__all__ = ["Cluster", "Remote", "cluster", "os"]


async def recovery_passes(*instances: Remote, passes: int = 2) -> None:
    """Wait until every instance has completed ``passes`` more announce sweeps and
    reconcile passes than now.

    Absence of duplicates can only be observed over a window; this makes the window the
    one that matters: at least one whole sweep and one whole reconcile, started after the
    call, on every instance. Each pass is a debug line of ``colaflow_mcp.supervisor`` in the
    instance's output (see ``FAST_ENV``).
    """
    await server_passes(*(x.server for x in instances), passes=passes)


async def server_passes(*servers: ServerProcess, passes: int = 2) -> None:
    """:func:`recovery_passes` of server processes."""
    loops = ("announce-sweep", "reconcile")
    marks = [s.mark() for s in servers]

    def enough(lines: list[str]) -> bool:
        return all(sum(f"loop pass: {loop} #" in line for line in lines) >= passes
                   for loop in loops)

    for server, since in zip(servers, marks, strict=True):
        await server.wait_for_output(enough, within=20, since=since)
