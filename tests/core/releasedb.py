"""The databases release 0.1.0 wrote (tests/fixtures/release-0.1.0), ready to upgrade."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tests.harness import create_pg_database
from tests.pgdb import PG_ADMIN_URL

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0"
MANIFEST: dict[str, Any] = json.loads((FIXTURE / "manifest.json").read_text())


def sqlite_release_copy(tmp: Path) -> str:
    """A copy of the release's SQLite file (the fixture itself is never written)."""
    target = tmp / "release-0.1.0.db"
    shutil.copyfile(FIXTURE / "colaflow.db", target)
    return f"sqlite:///{target}"


async def _connect(url: str) -> asyncpg.Connection:
    u = make_url(url)
    return await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 database=u.database)


async def drop_pg_database(url: str) -> None:
    """Drop a database made by ``create_pg_database`` (connections to it are ended)."""
    conn = await _connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def pg_database(release: bool = False) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (with the release's dump loaded if ``release``),
    dropped afterwards."""
    url = await create_pg_database()
    try:
        if release:
            conn = await _connect(url)
            try:
                # pg_dump's own psql meta-commands (\restrict …) are not SQL.
                sql = "\n".join(line for line in (FIXTURE / "postgres.sql").read_text()
                                .splitlines() if not line.startswith("\\"))
                await conn.execute(sql)
            finally:
                await conn.close()
        yield url
    finally:
        await drop_pg_database(url)
