"""PostgreSQL test databases: one per test, dropped when the test ends; stale ones swept.

Each name says who made it and when — ``cola_test_<host>_<pid>_<unix time>_<random>`` — so
a sweep at session start can tell a leftover from a database that another test run on this
machine (another developer's, say) is using right now: it drops only databases whose
creator process on this host is gone, or that are older than ``STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

PG_ADMIN_URL = os.environ.get("COLAFLOW_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "cola_test_"
# Longer than any test run; a database this old is a leftover whoever made it.
STALE_AFTER_SECONDS = 6 * 3600.0
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_NAME = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})_(\d+)_(\d+)_[0-9a-f]+$")

T = TypeVar("T")
logger = logging.getLogger(__name__)
# Databases made by this process and not dropped yet: the autouse fixture in
# tests/conftest.py drops those a test made when it ends, whoever made them.
created: set[str] = set()


def admin_address() -> tuple[str, int]:
    """Host and port of the PostgreSQL server the tests use."""
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    return admin.host or "127.0.0.1", admin.port or 5432


def new_name(now: float | None = None) -> str:
    """A database name carrying this host, this process and the time."""
    stamp = int(time.time() if now is None else now)
    return f"{PREFIX}{HOST_TAG}_{os.getpid()}_{stamp}_{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def is_stale(name: str, now: float, age_seconds: float | None = None,
             alive: Callable[[int], bool] = pid_alive) -> bool:
    """Whether a ``cola_test_*`` database is a leftover nobody can be using.

    ``age_seconds`` (from the server, when it tells) dates names of the older form
    without a creator; such a database is only ever dropped for its age.
    """
    m = _NAME.match(name)
    if m is None:
        return age_seconds is not None and age_seconds > STALE_AFTER_SECONDS
    host, pid, stamp = m.group(1), int(m.group(2)), int(m.group(3))
    if now - stamp > STALE_AFTER_SECONDS:
        return True
    return host == HOST_TAG and pid != os.getpid() and not alive(pid)


async def _admin() -> Any:
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    return await asyncpg.connect(host=admin.host, port=admin.port or 5432,
                                 user=admin.username, password=admin.password,
                                 database=admin.database)


async def _drop(conn: Any, name: str) -> None:
    quoted = '"' + name.replace('"', '""') + '"'
    if conn.get_server_version().major >= 13:
        # FORCE ends the connections a test left behind (a killed server's, a pool's).
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        return
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    await conn.execute(f"DROP DATABASE IF EXISTS {quoted}")


async def create_database() -> str:
    """A fresh, empty database; its plain URL. Drop it with :func:`drop_database`."""
    from sqlalchemy.engine import make_url

    name = new_name()
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    created.add(name)
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database` (its connections are ended)."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name is not None and name.startswith(PREFIX), url
    conn = await _admin()
    try:
        await _drop(conn, name)
    finally:
        await conn.close()
    created.discard(name)


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A fresh database for the block; dropped when it ends, however it ends."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


async def drop_names(names: set[str]) -> None:
    """Drop databases this process made (see ``created``), ending their connections."""
    conn = await _admin()
    try:
        for name in sorted(names):
            await _drop(conn, name)
            created.discard(name)
    finally:
        await conn.close()


def run_in_thread(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``coro_fn()`` to completion on a loop of its own (from sync fixtures and hooks,
    whatever event loop the test runner keeps in this thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn()).result()


async def sweep_stale(now: float | None = None) -> list[str]:
    """Drop leftover ``cola_test_*`` databases (see :func:`is_stale`); the names dropped."""
    now = time.time() if now is None else now
    conn = await _admin()
    try:
        try:
            rows = await conn.fetch(
                "SELECT datname, extract(epoch FROM now() - (pg_stat_file("
                "'base/' || oid || '/PG_VERSION')).modification)::float8 AS age "
                "FROM pg_database WHERE datname LIKE 'cola\\_test\\_%'")
        except Exception:  # pg_stat_file needs a superuser: date by name only
            rows = await conn.fetch("SELECT datname, NULL::float8 AS age FROM pg_database "
                                    "WHERE datname LIKE 'cola\\_test\\_%'")
        dropped = []
        for row in rows:
            name: str = row["datname"]
            if is_stale(name, now, row["age"]):
                try:
                    await _drop(conn, name)
                    dropped.append(name)
                except Exception as exc:  # in use after all, or gone: leave it
                    logger.warning("could not drop stale %s: %s", name, exc)
        return dropped
    finally:
        await conn.close()
