"""Schemathesis against a served process (``colaflow-mcp serve`` on port 0): every
operation of ``/openapi.json``, as an agent and as a reviewer, with data that fits the
document and data that does not. No answer is a 5xx, every status is documented, every
body matches its schema, and the server logs no error.

Examples per operation: ``EXAMPLES`` × ``COLAFLOW_TEST_FUZZ_SCALE`` (tests/fuzz.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz import fuzz_settings
from tests.procs import cli_env, serve

EXAMPLES = 12
# Negative data may include framing headers; a malformed one (``Content-Length: x``) is
# refused by the HTTP server itself (uvicorn: 400 text/plain) before any route is reached.
FRAMING = {"content-length", "transfer-encoding", "host", "connection"}
CHECKS: list[Any] = [not_a_server_error, status_code_conformance, content_type_conformance,
                     response_schema_conformance]


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = subprocess.run(["colaflow-mcp", *args], cwd=cwd, env=cli_env(env),
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def _seed(base: str, key: str, token: str) -> list[str]:
    """Changes of every status, and an issue with a comment: ids the fuzzer may hit."""
    agent = {"Authorization": f"Bearer {key}"}
    reviewer = {"Authorization": f"Bearer {token}"}

    def propose(tool: str, arguments: dict[str, Any]) -> str:
        r = httpx.post(f"{base}/api/mcp/pending-changes", headers=agent,
                       json={"tool": tool, "arguments": arguments, "rationale": "seed"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    issue = propose("create_issue", {"project_key": "WEB", "title": "Seeded"})
    assert httpx.post(f"{base}/api/mcp/pending-changes/{issue}/approve",
                      headers=reviewer).status_code == 200
    comment = propose("add_comment", {"issue_key": "WEB-1", "body": "hello"})
    edited = propose("update_issue", {"issue_key": "WEB-1", "title": "Renamed"})
    rejected = propose("delete_issue", {"issue_key": "WEB-1"})
    assert httpx.post(f"{base}/api/mcp/pending-changes/{comment}/approve",
                      headers=reviewer).status_code == 200
    assert httpx.post(f"{base}/api/mcp/pending-changes/{edited}/approve", headers=reviewer,
                      json={"arguments": {"issue_key": "WEB-1", "title": "Edited"}}
                      ).status_code == 200
    assert httpx.post(f"{base}/api/mcp/pending-changes/{rejected}/reject", headers=reviewer,
                      json={"reason": "no"}).status_code == 200
    pending = [propose("create_issue", {"project_key": "WEB", "title": f"Pending {i}"})
               for i in range(3)]
    return [issue, comment, edited, rejected, *pending]


def _fuzz(cases: st.SearchStrategy[Case], base: str, headers: dict[str, str]) -> int:
    """Call and check the examples of ``cases``; how many were called."""
    calls = 0

    @given(case=cases)
    @fuzz_settings(EXAMPLES)
    def call(case: Case) -> None:
        nonlocal calls
        calls += 1
        for name in list(case.headers or {}):
            if name.lower() in FRAMING:  # the HTTP client's to set, not the API's input
                del case.headers[name]  # type: ignore[union-attr]
        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)

    call()
    return calls


def test_every_operation_answers_as_its_document_says_as_agent_and_reviewer(
        tmp_path: Path) -> None:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'fuzz.db'}"}
    key = json.loads(_cli(env, tmp_path, "keys", "create", "--tenant", "acme",
                          "--json"))["key"]
    token = _cli(env, tmp_path, "token", "--tenant", "acme", "--user", "rita")
    _cli(env, tmp_path, "projects", "create", "--tenant", "acme", "--key", "WEB",
         "--name", "Website")
    with serve(env, tmp_path) as server:
        base = server.base_url
        ids = _seed(base, key, token)
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 12
        calls = 0
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key},
                        {"Authorization": f"Bearer {token}"}):
            for operation in operations:
                strategies = [operation.as_strategy(GenerationMode.POSITIVE),
                              operation.as_strategy(GenerationMode.NEGATIVE)]
                if "{id}" in operation.path:  # also the ids that exist
                    strategies += [operation.as_strategy(path_parameters={"id": cid})
                                   for cid in ids]
                calls += _fuzz(st.one_of(strategies), base, headers)
        health = httpx.get(f"{base}/health/ready")
        assert health.status_code == 200, health.text
    assert calls >= 3 * len(operations)
    logged = server.output()
    assert " ERROR " not in logged and "Traceback" not in logged, logged[-3000:]
