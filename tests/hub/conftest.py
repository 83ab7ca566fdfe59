"""Fixtures for hub tests: a real server per test (see hubenv.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from hubenv import HubEnv, ServerFactory, run_server


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
