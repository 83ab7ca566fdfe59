"""PostgreSQL test databases do not pile up: each is dropped when its test ends, and a
session's start drops the leftovers of earlier runs — never a database still in use."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from tests import pgdb
from tests.harness import require_service

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _name(host: str = pgdb.HOST_TAG, pid: int | None = None, stamp: float = NOW) -> str:
    return f"{pgdb.PREFIX}{host}_{pid or os.getpid()}_{int(stamp)}_{uuid.uuid4().hex[:8]}"


def test_a_new_name_says_host_process_and_time() -> None:
    name = pgdb.new_name(NOW)
    assert name.startswith(f"cola_test_{pgdb.HOST_TAG}_{os.getpid()}_{int(NOW)}_")
    assert len(name) <= 63  # PostgreSQL's limit for identifiers


def test_only_leftovers_are_stale() -> None:
    dead = _dead_pid()
    hours = 3600.0
    # Made by a process of this host that is gone: stale, however young.
    assert pgdb.is_stale(_name(pid=dead), NOW)
    # This run's own, another live run's, and another host's (its pids mean nothing here).
    assert not pgdb.is_stale(_name(), NOW)
    assert not pgdb.is_stale(_name(pid=os.getppid()), NOW)
    assert not pgdb.is_stale(_name(host="ffffff", pid=dead), NOW)
    # Anything older than a few hours is stale, whoever made it.
    assert pgdb.is_stale(_name(host="ffffff", pid=os.getppid(), stamp=NOW - 7 * hours), NOW)
    # The older names carry no creator: only their age (when the server tells) counts.
    legacy = "cola_test_4c22f3f81dbf"
    assert not pgdb.is_stale(legacy, NOW)
    assert not pgdb.is_stale(legacy, NOW, age_seconds=60)
    assert pgdb.is_stale(legacy, NOW, age_seconds=7 * hours)


async def _exists(name: str) -> bool:
    conn = await pgdb._admin()
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def _create(name: str) -> None:
    conn = await pgdb._admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def test_the_sweep_drops_leftovers_and_keeps_databases_in_use() -> None:
    require_service("PostgreSQL", *pgdb.admin_address())
    now = time.time()
    leftover, old = _name(pid=_dead_pid(), stamp=now), _name(pid=os.getppid(), stamp=now - 1e5)
    live, mine = _name(pid=os.getppid(), stamp=now), _name(stamp=now)
    names = [leftover, old, live, mine]
    for name in names:
        await _create(name)
    try:
        dropped = await pgdb.sweep_stale()
        assert {leftover, old} <= set(dropped)
        assert [await _exists(n) for n in names] == [False, False, True, True]
    finally:
        pgdb.created.update(names)
        await pgdb.drop_names(set(names))
    assert [await _exists(n) for n in names] == [False] * 4


async def test_a_database_with_connections_left_open_is_dropped() -> None:
    require_service("PostgreSQL", *pgdb.admin_address())
    import asyncpg
    from sqlalchemy.engine import make_url

    async with pgdb.pg_database() as url:
        name = make_url(url).database
        assert name is not None and await _exists(name)
        # A connection nobody closes, as a killed server or a leaked pool leaves.
        admin = make_url(pgdb.PG_ADMIN_URL)
        left_open = await asyncpg.connect(host=admin.host, port=admin.port or 5432,
                                          user=admin.username, database=name)
    try:
        assert not await _exists(name)
        assert name not in pgdb.created
    finally:
        left_open.terminate()
