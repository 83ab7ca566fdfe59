"""Fixtures for hub tests: a real server per test (see hubenv.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from hubenv import HubEnv, ServerFactory, run_server

from tests.harness import absent

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server_factory(tmp_path: Path) -> ServerFactory:
    """``async with server_factory(hub_client_timeout_seconds=0.5) as env: …``"""

    def make(**overrides: Any) -> AbstractAsyncContextManager[HubEnv]:
        return run_server(tmp_path, **overrides)

    return make


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[HubEnv]:
    async with run_server(tmp_path) as e:
        yield e


def _node_ready() -> str | None:
    """None when node and the npm packages are usable; else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            return "npm is not installed (needed for `npm ci` in tests/js)"
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            return f"`npm ci` in tests/js failed: {done.stderr[-500:]}"
    return None


@pytest.fixture(scope="session")
def node_ready() -> None:
    reason = _node_ready()
    if reason is not None:
        absent(f"the @microsoft/signalr interop tests cannot run: {reason}")
