"""`colaflow-mcp changes …` as a reviewer runs it: the CLI as a process, against a running
`colaflow-mcp serve` (REST, and the hub for ``watch``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from colaflow_mcp.config import Settings
from colaflow_mcp.domain import admin
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange
from tests.procs import AsyncServe, ServerProcess, cli_env

pytestmark = pytest.mark.anyio

# watch reconnects fast enough for a test (a restart takes a few seconds).
CLI_TIMINGS = {"COLAFLOW_REVIEWER_CLI_MAX_BACKOFF_SECONDS": "1",
               "COLAFLOW_REVIEWER_CLI_TIMEOUT_SECONDS": "10"}


@dataclass
class Site:
    """A served database with a tenant, an agent key, a reviewer token and a project."""

    tmp: Path
    env: dict[str, str]
    key: str
    token: str
    server: ServerProcess | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def cli_env(self, **extra: str) -> dict[str, str]:
        return cli_env({**self.env, **CLI_TIMINGS, "COLAFLOW_URL": self.url,
                        "COLAFLOW_TOKEN": self.token, **extra})

    async def changes(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `colaflow-mcp changes ARGS` to its end."""
        done = await anyio.run_process(["colaflow-mcp", "changes", *args], cwd=self.tmp,
                                       env=self.cli_env(**env), check=False)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                           done.stderr.decode())

    async def call(self, method: str, path: str, credential: str | None = None,
                   **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            return await client.request(method, path, headers={
                "Authorization": f"Bearer {credential or self.token}"}, **kwargs)

    async def propose(self, title: str, expires_in: float | None = None) -> str:
        body: dict[str, Any] = {"tool": "create_issue",
                                "arguments": {"project_key": "WEB", "title": title}}
        if expires_in is not None:
            body["expiresInSeconds"] = expires_in
        r = await self.call("POST", "/api/mcp/pending-changes", self.key, json=body)
        assert r.status_code == 201, r.text
        cid: str = r.json()["id"]
        return cid

    async def change(self, cid: str) -> dict[str, Any]:
        r = await self.call("GET", f"/api/mcp/pending-changes/{cid}")
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body


def _bootstrap(tmp: Path, env: dict[str, str]) -> tuple[str, str]:
    def run(*args: str) -> str:
        return subprocess.run(["colaflow-mcp", *args], cwd=tmp, env=cli_env(env), check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    run("projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")
    return run("keys", "create", "--tenant", "acme"), run("token", "--tenant", "acme",
                                                          "--user", "alice")


@asynccontextmanager
async def site(tmp: Path) -> AsyncIterator[Site]:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp / 'cli.db'}",
           "COLAFLOW_JWT_SECRET": "reviewer-cli-test-secret",
           "COLAFLOW_EXPIRY_MAX_WAIT_SECONDS": "0.2"}
    key, token = await anyio.to_thread.run_sync(_bootstrap, tmp, env)
    s = Site(tmp, env, key, token)
    async with AsyncServe(env, tmp) as server:
        s.server = server
        yield s


async def test_list_and_show_print_the_changes(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        first, second = await s.propose("First"), await s.propose("Second")
        r = await s.changes("list")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert [line.split()[0] for line in lines] == [second, first]  # newest first
        assert "Pending" in lines[0] and "Second" in lines[0]
        listed = json.loads((await s.changes("list", "--json", "--status", "pending")).stdout)
        assert [c["id"] for c in listed["items"]] == [second, first] and listed["total"] == 2
        assert (await s.changes("list", "--status", "Approved")).stdout == "(no changes)\n"

        shown = await s.changes("show", first)
        assert shown.returncode == 0 and shown.stdout.startswith(first)
        assert "Create task in WEB: 'First'" in shown.stdout
        assert 'title: null -> "First"' in shown.stdout
        as_json = json.loads((await s.changes("show", first, "--json")).stdout)
        assert as_json == await s.change(first)


async def test_approve_and_reject_decide_and_a_decided_change_exits_3(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        one, two = await s.propose("One"), await s.propose("Two")
        r = await s.changes("approve", one)
        assert r.returncode == 0, r.stderr
        change = await s.change(one)
        assert change["status"] == "Approved" and change["decidedBy"] == "alice"
        assert r.stdout == f"approved {one} (executed: {change['executionResult']['entityId']})\n"
        r = await s.changes("reject", two, "--reason", "needs a test plan", "--json")
        assert r.returncode == 0
        assert json.loads(r.stdout)["reason"] == "needs a test plan"
        assert (await s.change(two))["status"] == "Rejected"
        for again in (["approve", two], ["reject", one, "--reason", "late"]):
            r = await s.changes(*again)
            assert r.returncode == 3 and r.stdout == ""
            assert r.stderr.startswith("error: already decided: ")
        assert (await s.changes("approve", one)).stderr == "error: already decided: Approved\n"


async def test_failures_exit_1_with_a_message_and_bad_usage_exits_2(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        cid = await s.propose("Still pending")
        missing = "00000000-0000-4000-8000-000000000000"
        r = await s.changes("approve", missing)
        assert r.returncode == 1 and "not found (HTTP 404)" in r.stderr
        r = await s.changes("approve", cid, COLAFLOW_TOKEN=s.key)  # an agent's key
        assert r.returncode == 1 and "only reviewers" in r.stderr and s.key not in r.stderr
        r = await s.changes("list", COLAFLOW_TOKEN="not-a-token")
        assert r.returncode == 1 and "refused the token" in r.stderr
        r = await s.changes("list", COLAFLOW_URL="http://127.0.0.1:9")  # nothing listens
        assert r.returncode == 1 and r.stderr.startswith("error: cannot reach http://127.0.0.1:9")
        for usage in (["list", "--status", "Maybe"], ["approve", cid, "--arguments", "{nope"],
                      ["approve", cid, "--arguments", "[1]"], ["reject", cid]):
            r = await s.changes(*usage)
            assert r.returncode == 2 and "usage:" in r.stderr, usage
        r = await s.changes("list", COLAFLOW_TOKEN="")
        assert r.returncode == 2 and "COLAFLOW_TOKEN" in r.stderr
        # A secret in the URL (which would not work anyway: httpx would send the userinfo
        # as Basic credentials instead of the token) is refused, and never printed back.
        for url in ("http://u:s3cret@127.0.0.1:9", "u:s3cret@127.0.0.1:9",
                    f"{s.url}/?token=s3cret", f"{s.url}/#s3cret"):
            r = await s.changes("list", "--url", url)
            assert r.returncode == 2 and "--url is the server's address" in r.stderr, (url, r)
            assert "s3cret" not in r.stderr + r.stdout, url
        r = await s.changes("list", "--url", "http://[::1")  # not a URL at all
        assert r.returncode == 2 and "--url is not a URL" in r.stderr, r
        # An endpoint's address (the agent's /mcp, say) where the base belongs: which base.
        for endpoint in ("/mcp", "/hubs/mcp/", "/api/mcp/pending-changes", "/inbox"):
            r = await s.changes("list", "--url", s.url + endpoint)
            assert r.returncode == 2, (endpoint, r)
            assert "--url is the server's base address, not its /" in r.stderr, (endpoint, r)
            assert r.stderr.rstrip().endswith(f"{s.url!r}"), (endpoint, r.stderr)
        behind_a_prefix = await s.changes("list", "--url", s.url + "/colaflow")
        assert "not its" not in behind_a_prefix.stderr, behind_a_prefix
        assert (await s.change(cid))["status"] == "Pending"


class FlakyProxy:
    """Forwards TCP to the server; the first connections misbehave, in order, as
    ``faults`` says: ``refuse`` (closed before anything reaches the server) or ``lose``
    (the request reaches the server, its answer never comes back). :meth:`blackhole`
    makes the links open so far silently drop everything, both ways, without closing."""

    def __init__(self, port: int, faults: list[str]) -> None:
        self.target = port
        self.faults = faults
        self.seen: list[str] = []
        self.links = 0
        self.dead_below = 0  # links numbered below this drop everything

    def blackhole(self) -> None:
        self.dead_below = self.links

    async def run(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        fault = self.faults.pop(0) if self.faults else "none"
        self.seen.append(fault)
        link, self.links = self.links, self.links + 1
        alive = lambda: link >= self.dead_below  # noqa: E731
        async with client:
            if fault == "refuse":
                return
            async with await anyio.connect_tcp("127.0.0.1", self.target) as upstream, \
                    anyio.create_task_group() as tg:
                tg.start_soon(_pump, client, upstream, tg.cancel_scope, False, alive)
                tg.start_soon(_pump, upstream, client, tg.cancel_scope, fault == "lose", alive)


async def _pump(src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream,
                scope: anyio.CancelScope, drop: bool, alive: Callable[[], bool]) -> None:
    try:
        async for chunk in src:
            if drop:
                break  # the answer came: the request was handled; the client never knows
            if alive():
                await dst.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    scope.cancel()


@pytest.mark.parametrize("fault", ["refuse", "lose"])
async def test_a_decision_is_retried_once_after_a_connection_error(
    tmp_path: Path, fault: str,
) -> None:
    async with site(tmp_path) as s, anyio.create_task_group() as tg:
        assert s.server is not None
        approved, rejected = await s.propose("approve me"), await s.propose("reject me")
        proxy = FlakyProxy(s.server.port, [fault])
        port = await tg.start(proxy.run)
        via = {"COLAFLOW_URL": f"http://127.0.0.1:{port}"}
        r = await s.changes("approve", approved, **via)
        # Either the first attempt never arrived (the retry decides) or it did and its
        # answer was lost (the retry gets 409 for our own decision): success both ways.
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"approved {approved} (executed")
        assert proxy.seen[:2] == [fault, "none"]
        assert (await s.change(approved))["status"] == "Approved"
        proxy.faults = [fault, fault]  # a second failure in a row is reported
        r = await s.changes("reject", rejected, "--reason", "no", **via)
        assert r.returncode == 1 and "cannot reach" in r.stderr
        tg.cancel_scope.cancel()


class Watch:
    """`colaflow-mcp changes watch` running; its stdout lines as they come."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = ""
        assert process.stdout is not None
        self._stdout = TextReceiveStream(process.stdout)

    async def expect(self, pred: Callable[[str], bool], within: float = 15.0) -> str:
        """The first line (read so far or next) matching ``pred``."""
        for line in self.lines:
            if pred(line):
                return line
        with anyio.fail_after(within):
            while True:
                self._buffer += await self._stdout.receive()
                *complete, self._buffer = self._buffer.split("\n")
                self.lines.extend(complete)
                for line in complete:
                    if pred(line):
                        return line

    def events(self) -> list[tuple[str, str, bool]]:
        """(event, change id, catch-up?) of every JSON line so far."""
        return [(e["event"], e["pendingChangeId"], bool(e.get("catchUp")))
                for e in map(json.loads, self.lines)]


@asynccontextmanager
async def watching(s: Site, *args: str, **env: str) -> AsyncIterator[Watch]:
    process = await anyio.open_process(["colaflow-mcp", "changes", "watch", *args],
                                       cwd=s.tmp, env=s.cli_env(**env), stderr=None)
    try:
        yield Watch(process)
    finally:
        with anyio.CancelScope(shield=True):
            process.terminate()
            await process.wait()


def _has(cid: str, event: str = "") -> Callable[[str], bool]:
    return lambda line: cid in line and event in line


async def test_watch_prints_one_line_per_created_or_decided_change(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        waiting = await s.propose("waiting")
        async with watching(s, "--json") as w:
            await w.expect(_has(waiting, '"Pending"'))
            fresh, expiring = await s.propose("fresh"), await s.propose("soon", expires_in=1)
            await w.expect(_has(expiring, "PendingChangeCreated"))
            assert (await s.changes("approve", fresh)).returncode == 0
            assert (await s.changes("reject", waiting, "--reason", "no")).returncode == 0
            await w.expect(_has(expiring, "PendingChangeExpired"))
            last = await s.propose("last")  # everything before it has been printed
            await w.expect(_has(last, "PendingChangeCreated"))
            events = w.events()
            assert events[:3] == [("Pending", waiting, False),
                                  ("PendingChangeCreated", fresh, False),
                                  ("PendingChangeCreated", expiring, False)]
            # The expiry may come before or between the two decisions.
            assert sorted(events[3:6]) == [("PendingChangeApproved", fresh, False),
                                           ("PendingChangeExpired", expiring, False),
                                           ("PendingChangeRejected", waiting, False)]
            assert events[6:] == [("PendingChangeCreated", last, False)]
            created = json.loads(w.lines[1])["data"]  # the change as it was proposed
            now = await s.change(fresh)
            assert created["status"] == "Pending" and created["decidedBy"] is None
            assert {k: created[k] for k in ("id", "summary", "diff", "createdAt")} == {
                k: now[k] for k in ("id", "summary", "diff", "createdAt")}
        async with watching(s) as text:
            line = await text.expect(_has(last))
            assert line.split()[1:3] == ["pending", last] and " create_issue" in line
            assert (await s.changes("reject", last, "--reason", "not \x1b[2J now")).returncode == 0
            line = await text.expect(_has(last, "rejected"))
            assert line.endswith(f"rejected  {last}  by alice: not \\x1b[2J now")


async def _decide_while_the_server_is_down(s: Site, rejected: str) -> str:
    """Through the same domain code a server runs, on the database it serves: reject one
    change and propose another, with nobody announcing either."""

    class Nobody:
        async def announce(self, change: PendingChange) -> None:
            pass

    db = Database(s.env["COLAFLOW_DATABASE_URL"])
    await db.create_schema()
    try:
        tenant = await admin.get_tenant(db, "acme")
        assert tenant is not None
        changes = ChangeService(db, Nobody(), Settings(database_url=db.url))
        reviewer = Principal("reviewer", tenant.id, tenant.slug, user="bob")
        await changes.reject(reviewer, rejected, "decided while watch was away")
        agent = Principal("agent", tenant.id, tenant.slug, api_key_id="k")
        change = await changes.propose(agent, "create_issue",
                                       {"project_key": "WEB", "title": "proposed meanwhile"})
        return change.id
    finally:
        await db.dispose()


async def test_watch_reconnects_after_a_server_restart_and_reports_what_it_missed(
    tmp_path: Path,
) -> None:
    async with site(tmp_path) as s:
        assert s.server is not None
        kept, decided = await s.propose("kept"), await s.propose("decided")
        port = s.server.port
        async with watching(s, "--json") as w:
            await w.expect(_has(decided, '"Pending"'))
            await anyio.to_thread.run_sync(s.server.stop)
            meanwhile = await _decide_while_the_server_is_down(s, decided)
            async with AsyncServe(s.env, s.tmp, port=port) as s.server:
                await w.expect(_has(meanwhile, "PendingChangeCreated"), within=30)
                live = await s.propose("after the restart")
                await w.expect(_has(live, "PendingChangeCreated"))
                assert w.events() == [
                    ("Pending", kept, False), ("Pending", decided, False),
                    ("PendingChangeRejected", decided, True),
                    ("PendingChangeCreated", meanwhile, True),
                    ("PendingChangeCreated", live, False)]
                rejected = json.loads(w.lines[2])["data"]
                assert rejected["reason"] == "decided while watch was away"
                assert rejected["decidedBy"] == "bob"


async def test_watch_reconnects_when_the_server_falls_silent(tmp_path: Path) -> None:
    async with site(tmp_path) as s, anyio.create_task_group() as tg:
        assert s.server is not None
        proxy = FlakyProxy(s.server.port, [])
        port = await tg.start(proxy.run)
        waiting = await s.propose("waiting")
        async with watching(s, "--json", COLAFLOW_URL=f"http://127.0.0.1:{port}",
                            COLAFLOW_REVIEWER_CLI_SILENCE_SECONDS="2",
                            COLAFLOW_REVIEWER_CLI_PING_SECONDS="0.5") as w:
            await w.expect(_has(waiting, '"Pending"'))
            # A network path that goes dead without a word (no FIN, no RST): only the
            # silence tells.
            proxy.blackhole()
            fresh = await s.propose("proposed into the silence")
            line = await w.expect(_has(fresh, "PendingChangeCreated"), within=20)
            assert json.loads(line)["catchUp"] is True
            assert proxy.links >= 2
        tg.cancel_scope.cancel()


async def test_approve_with_arguments_applies_the_reviewers_edit(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        cid = await s.propose("Fix the logn page")
        edited = {"project_key": "WEB", "title": "Fix the login page", "priority": "High"}
        r = await s.changes("approve", cid, "--arguments", json.dumps(edited), "--json")
        assert r.returncode == 0, r.stderr
        change = json.loads(r.stdout)
        assert change["edited"] is True and change["editedBy"] == "alice"
        assert change["arguments"]["title"] == "Fix the login page"
        assert change["proposedArguments"]["title"] == "Fix the logn page"
        r = await s.call("GET", "/api/issues/WEB-1")
        assert r.json()["title"] == "Fix the login page" and r.json()["priority"] == "High"
        other = await s.propose("Another")
        bad = await s.changes("approve", other, "--arguments", '{"project_key": "WEB"}')
        assert bad.returncode == 1 and "title" in bad.stderr and "(HTTP 400)" in bad.stderr
        assert (await s.change(other))["status"] == "Pending"
        shown = await s.changes("show", cid)
        assert "edited by:" in shown.stdout and "alice" in shown.stdout


async def test_list_beyond_one_page_lists_each_change_once(tmp_path: Path) -> None:
    # More than the REST listing's largest page (100): the CLI pages, and a --limit that
    # is not a multiple of 100 must not make its last page overlap the ones before it.
    async with site(tmp_path) as s:
        async with httpx.AsyncClient(base_url=s.url, timeout=30) as client:
            for i in range(130):
                r = await client.post("/api/mcp/pending-changes", headers={
                    "Authorization": f"Bearer {s.key}"}, json={
                        "tool": "create_issue",
                        "arguments": {"project_key": "WEB", "title": f"Bulk {i}"}})
                assert r.status_code == 201, r.text
        newest = (await s.call("GET", "/api/mcp/pending-changes",
                               params={"pageSize": 100})).json()["items"]
        for limit, expected in (("120", 120), ("1000", 130)):
            listed = json.loads((await s.changes("list", "--limit", limit, "--json")).stdout)
            ids = [c["id"] for c in listed["items"]]
            assert len(ids) == expected and len(set(ids)) == expected, (limit, len(set(ids)))
            assert ids[:100] == [c["id"] for c in newest] and listed["total"] == 130
        lines = (await s.changes("list", "--limit", "150")).stdout.splitlines()
        assert len(lines) == 130 and len({line.split()[0] for line in lines}) == 130
