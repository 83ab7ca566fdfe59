"""examples/webhook_receiver.py, run as docs/webhooks.md says, receives and verifies real
deliveries from `colaflow-mcp serve`, and handles each webhook-id once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.core.test_cli import cli
from tests.procs import AsyncServe, ServerProcess, cli_env, spawn

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "webhook_receiver.py")
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")


@contextmanager
def example(tmp: Path, secret: str, port: int = 0) -> Iterator[ServerProcess]:
    env = {**os.environ, "COLAFLOW_WEBHOOK_SECRET": secret}
    proc, ready = spawn([sys.executable, EXAMPLE, "--port", str(port)], tmp, env,
                        lambda line: int(m.group(1)) if (m := _LISTENING.search(line))
                        else None)
    try:
        assert ready.wait(20) and proc.listening, proc.output()
        yield proc
    finally:
        proc.stop()


def add_webhook(tmp: Path, url: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        ["colaflow-mcp", "webhooks", "add", "--tenant", "acme", "--url", url, "--json"],
        cwd=tmp, env=cli_env(env), capture_output=True, text=True, check=True, timeout=60)
    added: dict[str, str] = json.loads(out.stdout)
    return added


async def test_the_example_receiver_verifies_and_prints_each_event_once(tmp_path: Path
                                                                         ) -> None:
    key = json.loads(cli(tmp_path, "keys", "create", "--tenant", "acme", "--json").stdout)
    cli(tmp_path, "projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")
    token = cli(tmp_path, "token", "--tenant", "acme", "--user", "alice").stdout.strip()
    # The receiver's port first (the OS picks it), then the endpoint and its secret, then
    # the receiver again on that port with the secret, as an operator would.
    with example(tmp_path, "whsec_" + "A" * 44) as first:
        port = first.port
    url = f"http://127.0.0.1:{port}/colaflow"
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
           "COLAFLOW_WEBHOOK_POLL_INTERVAL_SECONDS": "3600"}
    added = add_webhook(tmp_path, url, env)
    with example(tmp_path, added["secret"], port) as receiver:
        async with AsyncServe(env, tmp_path) as server, \
                httpx.AsyncClient(base_url=server.base_url) as c:
            r = await c.post("/api/mcp/pending-changes", json={
                "tool": "create_issue", "arguments": {"project_key": "WEB", "title": "Hi"}},
                headers={"Authorization": f"Bearer {key['key']}"})
            change = r.json()["id"]
            r = await c.post(f"/api/mcp/pending-changes/{change}/approve",
                             headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200

            def events(lines: list[str]) -> list[dict[str, str]]:
                return [json.loads(line) for line in lines if line.startswith("{")]

            await receiver.wait_for_output(lambda lines: len(events(lines)) == 2, 20)
            got = events(receiver.log)
            assert [(e["type"], e["status"]) for e in got] == [
                ("pending_change.created", "Pending"), ("pending_change.approved", "Approved")]
            assert {e["pendingChangeId"] for e in got} == {change}

            # A forged delivery is refused.
            async with httpx.AsyncClient() as outside:
                forged = await outside.post(url, content=b'{"type":"x"}', headers={
                    "webhook-id": "msg_forged", "webhook-timestamp": "1",
                    "webhook-signature": "v1,AAAA"})
                assert forged.status_code == 400
            await receiver.wait_for_output(  # and said: a wrong secret is not silence
                lambda lines: any(line.startswith("refused a delivery (") for line in lines),
                20)
    assert len(events(receiver.log)) == 2
