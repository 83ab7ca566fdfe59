from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from colaflow_mcp.store.engine import Database
from tests import pgdb
from tests.harness import (
    Harness,
    _reachable,
    database_url_for,
    default_db_kind,
    fast_settings,
    in_process,
    live_server,
)

DB_KINDS = ["sqlite", "postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Drop PostgreSQL test databases earlier runs left behind (never one in use)."""
    if not _reachable(*pgdb.admin_address()):
        return
    try:
        pgdb.run_in_thread(pgdb.sweep_stale)
    except Exception as exc:  # a sweep that fails must not stop the tests
        warnings.warn(f"sweeping stale test databases failed: {exc!r}", stacklevel=1)


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """Every PostgreSQL database made during a test is dropped when the test ends."""
    before = set(pgdb.created)
    yield
    made = pgdb.created - before
    if made:
        pgdb.run_in_thread(lambda: pgdb.drop_names(made))


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    return await database_url_for(default_db_kind(), tmp_path)


@pytest.fixture(params=DB_KINDS)
async def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    return await database_url_for(str(request.param), tmp_path)


@pytest.fixture
async def harness(any_database_url: str) -> AsyncIterator[Harness]:
    async with in_process(fast_settings(any_database_url)) as h:
        yield h


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A schema on the default database kind, disposed of afterwards."""
    database = Database(database_url)
    await database.create_schema()
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def app_harness(database_url: str) -> AsyncIterator[Harness]:
    """In-process app on the default database kind."""
    async with in_process(fast_settings(database_url)) as h:
        yield h


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Harness]:
    """A real uvicorn server on an ephemeral port."""
    async with live_server(fast_settings(database_url)) as h:
        yield h

