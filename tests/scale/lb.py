"""Two `colaflow-mcp serve` instances (tags a and b) behind a real nginx, on PostgreSQL + Redis.

Both instances start at the same moment on an empty database (they migrate it under a lock),
then the tenant, keys, reviewer token and project are created with the CLI, as an operator
would. Instances can be killed (SIGKILL) and started again on the same port with the same tag.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.core.releasedb import pg_database
from tests.harness import require_service
from tests.procs import ServerProcess, cli_env, serve, serve_each
from tests.scale.cluster import FAST_ENV
from tests.scale.nginx import Nginx, running_nginx

TAGS = ("a", "b")


@dataclass
class Balanced:
    """The deployment as its users see it: one URL (nginx), several keys, one reviewer."""

    tmp: Path
    env: dict[str, str]
    ports: dict[str, int]
    nginx: Nginx
    http: httpx.AsyncClient
    instances: dict[str, ServerProcess]
    keys: list[str] = field(default_factory=list)
    token: str = ""
    # Output of instances that were killed (their logs are checked for secrets too).
    dead_output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nginx.base_url

    def instance_env(self, tag: str) -> dict[str, str]:
        return {**self.env, "COLAFLOW_INSTANCE_TAG": tag, "COLAFLOW_INSTANCE_ID": tag}

    def cli(self, *args: str) -> str:
        out = subprocess.run(["colaflow-mcp", *args], cwd=self.tmp, env=cli_env(self.env),
                             capture_output=True, text=True, check=True, timeout=60)
        return out.stdout.strip()

    def direct(self, tag: str) -> str:
        """An instance's own URL (bypassing nginx), for /health."""
        return f"http://127.0.0.1:{self.ports[tag]}"

    async def propose(self, title: str, key: str | None = None) -> str:
        r = await self.http.post("/api/mcp/pending-changes", json={
            "tool": "create_issue", "arguments": {"project_key": "WEB", "title": title}},
            headers={"Authorization": f"Bearer {key or self.keys[0]}"})
        assert r.status_code == 201, r.text
        change_id: str = r.json()["id"]
        return change_id

    async def decide(self, change_id: str, how: str = "approve") -> httpx.Response:
        """Approve or reject through nginx (once; see :meth:`decide_retrying`)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        path = f"/api/mcp/pending-changes/{change_id}/{how}"
        body = {"reason": "not now"} if how == "reject" else None
        return await self.http.post(path, json=body, headers=headers)

    async def decide_retrying(self, change_id: str, how: str = "approve"
                              ) -> list[httpx.Response]:
        """What docs/scale-out.md tells reviewers' tools to do: retry on 502/503/504 or a
        lost connection; the last answer is 200, or 409 when an earlier attempt won."""
        answers: list[httpx.Response] = []
        for _ in range(5):
            try:
                r = await self.decide(change_id, how)
            except httpx.TransportError:
                continue
            answers.append(r)
            if r.status_code not in (502, 503, 504):
                break
        return answers

    async def health(self, tag: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(self.direct(tag) + "/health")
        data: dict[str, Any] = r.json()
        return data

    async def kill(self, tag: str) -> None:
        """SIGKILL the instance (no shutdown hooks, no goodbyes)."""
        server = self.instances.pop(tag)
        await anyio.to_thread.run_sync(server.kill)
        self.dead_output.append(server.output())

    @asynccontextmanager
    async def restart(self, tag: str) -> AsyncIterator[ServerProcess]:
        """Start the instance again, same port and tag."""
        cm = serve(self.instance_env(tag), self.tmp, port=self.ports[tag])
        server = await anyio.to_thread.run_sync(cm.__enter__)
        self.instances[tag] = server
        try:
            yield server
        finally:
            self.instances.pop(tag, None)
            self.dead_output.append(server.output())
            await anyio.to_thread.run_sync(cm.__exit__, None, None, None)

    def all_logs(self) -> dict[str, str]:
        """Every log line: nginx's files and main log, every instance's output, dead or alive."""
        logs = {f"nginx/{name}": text for name, text in self.nginx.logs().items()}
        for tag, server in self.instances.items():
            logs[f"instance {tag}"] = server.output()
        for i, text in enumerate(self.dead_output):
            logs[f"earlier instance #{i}"] = text
        return logs

    def assert_no_secret_logged(self, secrets: Iterable[str]) -> None:
        """No API key, reviewer token or connection token in any log (checked whole and by
        its random part, in case a log shortens or splits it)."""
        needles = set()
        for secret in secrets:
            needles.add(secret)
            tail = secret.rsplit(".", 1)[-1] if not secret.startswith("ey") else secret[-24:]
            needles.add(tail[-24:])
        found = [(where, needle[:12] + "…") for where, text in self.all_logs().items()
                 for needle in needles if needle and needle in text]
        assert not found, f"secrets in logs: {found}"


@asynccontextmanager
async def balanced(tmp: Path, keys: int = 1, release: bool = False,
                   first_start: dict[str, dict[str, str]] | None = None
                   ) -> AsyncIterator[Balanced]:
    """Instances a and b started together on an empty database (``release``: on release
    0.1.0's database, to upgrade), nginx in front of them; the database is dropped after.
    ``first_start``: extra variables of an instance (by tag) until it is restarted."""
    require_service("Redis", "127.0.0.1", 6379)
    async with pg_database(release) as db_url:
        async with _balanced(tmp, db_url, keys, release, first_start or {}) as b:
            yield b


@asynccontextmanager
async def _balanced(tmp: Path, db_url: str, keys: int, release: bool,
                    first_start: dict[str, dict[str, str]]) -> AsyncIterator[Balanced]:
    env = {
        **FAST_ENV,
        "COLAFLOW_DATABASE_URL": db_url,
        "COLAFLOW_REDIS_URL": "redis://127.0.0.1:6379/0",
        "COLAFLOW_REDIS_CHANNEL": f"colaflow-test:{uuid.uuid4().hex}",
        "COLAFLOW_JWT_SECRET": "nginx-secret-" + uuid.uuid4().hex,
        # What the docs say to set: the public host name nginx forwards (MCP checks Host).
        "COLAFLOW_ALLOWED_HOSTS": "127.0.0.1",
        # The default: the JS client pings every 15 s (FAST_ENV's 10 s would close it).
        "COLAFLOW_HUB_CLIENT_TIMEOUT_SECONDS": "30",
    }
    start = serve_each([{**env, "COLAFLOW_INSTANCE_TAG": tag, "COLAFLOW_INSTANCE_ID": tag,
                         **first_start.get(tag, {})} for tag in TAGS], tmp)
    servers = await anyio.to_thread.run_sync(start.__enter__)
    # nginx is configured once the instances know their ports (the OS picked them).
    ports = {tag: server.port for tag, server in zip(TAGS, servers, strict=True)}
    try:
        front = running_nginx(tmp / "nginx", ports)
        nginx = await anyio.to_thread.run_sync(front.__enter__)
        try:
            async with httpx.AsyncClient(base_url=nginx.base_url, timeout=30) as http:
                b = Balanced(tmp, env, ports, nginx, http, dict(zip(TAGS, servers, strict=True)))

                await _bootstrap(b, keys, release)
                yield b
        finally:
            await anyio.to_thread.run_sync(front.__exit__, None, None, None)
    finally:
        await anyio.to_thread.run_sync(start.__exit__, None, None, None)


async def _bootstrap(b: Balanced, keys: int, release: bool) -> None:
    """Keys, a reviewer token and the project, with the CLI (in parallel: each command is a
    process start, seconds on a busy machine)."""
    def key(i: int) -> None:
        b.keys.append(json.loads(b.cli("keys", "create", "--tenant", "acme", "--name",
                                       f"agent-{i}", "--json"))["key"])

    def token() -> None:
        b.token = b.cli("token", "--tenant", "acme", "--user", "alice")

    def project() -> None:
        if not release:  # the release's database has it
            b.cli("projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")

    await anyio.to_thread.run_sync(key, 0)  # creates the tenant the others use
    async with anyio.create_task_group() as tg:
        for i in range(1, keys):
            tg.start_soon(anyio.to_thread.run_sync, key, i)
        tg.start_soon(anyio.to_thread.run_sync, token)
        tg.start_soon(anyio.to_thread.run_sync, project)
