"""Behind a proxy on another machine (docs/scale-out.md, "Logs and secrets"): `serve`
believes ``X-Forwarded-For``/``-Proto`` only from the addresses in ``FORWARDED_ALLOW_IPS``
(uvicorn's setting, read from the environment), and from those it does."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.procs import serve

pytestmark = pytest.mark.anyio


def _client_of(lines: list[str], marker: str) -> str:
    """The client address the access line of the request to ``marker`` names."""
    for line in lines:
        entry = json.loads(line)
        if entry["logger"] == "uvicorn.access" and marker in entry["message"]:
            return str(entry["message"].split(" - ", 1)[0].rsplit(":", 1)[0])
    raise AssertionError(f"no access line for {marker}")


async def test_forwarded_headers_are_believed_only_from_the_listed_proxy(tmp_path: Path
                                                                          ) -> None:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'fwd.db'}",
           "COLAFLOW_LOG_FORMAT": "json",
           # The proxy at 127.0.0.2; the default (loopback) no longer applies.
           "FORWARDED_ALLOW_IPS": "127.0.0.2"}
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with serve(env, tmp_path) as server:
        since = server.mark()
        for source, marker in (("127.0.0.2", "proxy"), ("127.0.0.1", "other")):
            transport = httpx.AsyncHTTPTransport(local_address=source)
            async with httpx.AsyncClient(transport=transport) as client:
                answer = await client.get(f"{server.base_url}/health/live?from={marker}",
                                          headers=forwarded)
            assert answer.status_code == 200
        await server.wait_for_output(
            lambda lines: sum("/health/live?from=" in line for line in lines) == 2,
            within=10, since=since)
        lines = [line for line in server.log[since:] if line.startswith("{")]
    assert _client_of(lines, "from=proxy") == "203.0.113.7"
    assert _client_of(lines, "from=other") == "127.0.0.1"
