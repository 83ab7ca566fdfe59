"""What an operator sees: `colaflow-mcp db …`, and `serve` processes started together on
an empty or a release-0.1.0 database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from colaflow_mcp.store import migrate
from colaflow_mcp.store.engine import async_url
from colaflow_mcp.store.migrations import VERSION_TABLE
from tests.core.releasedb import MANIFEST, pg_database, sqlite_release_copy
from tests.procs import cli_env, serve_together


def cli(tmp: Path, url: str, *args: str, check: bool = True, **env: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["colaflow-mcp", *args], cwd=tmp,
                          env=cli_env({"COLAFLOW_DATABASE_URL": url, **env}),
                          capture_output=True, text=True, check=check, timeout=60)


def test_db_commands_upgrade_a_release_database_and_report_on_stdout(tmp_path: Path) -> None:
    url = sqlite_release_copy(tmp_path)
    head = migrate.head()
    assert cli(tmp_path, url, "db", "current").stdout.startswith("unversioned")
    state = json.loads(cli(tmp_path, url, "db", "current", "--json").stdout)
    assert state == {"revision": None, "head": head, "state": "unversioned", "atHead": False}

    history = json.loads(cli(tmp_path, url, "db", "history", "--json").stdout)
    assert history["head"] == head
    assert history["revisions"][-1]["id"] == migrate.BASELINE
    assert history["revisions"][-1]["down"] is None
    assert [r["head"] for r in history["revisions"]].count(True) == 1
    text = cli(tmp_path, url, "db", "history").stdout
    assert f"<base> -> {migrate.BASELINE}" in text and "(head)" in text
    # Each revision's notes whole, not their first line: what an operator reads before an
    # upgrade (here, that the audit trail starts at the upgrade), without Alembic's lines.
    audit = next(r for r in history["revisions"] if r["id"] == "0003_audit")
    later = "History from before this revision is not in the trail"
    assert audit["description"].startswith("Audit trail: per-tenant hash chains")
    assert later in audit["description"] and "first proposal, decision or key change after " \
        "the upgrade." in audit["description"]
    assert "0002_reviewer_side -> 0003_audit\n    Audit trail: per-tenant hash chains" in text
    assert f"\n    {later}" in text and "Revision ID" not in text + json.dumps(history)
    assert "    (proposed vs applied arguments, edited, edited_by) on every pending change." \
        in text
    # And what going back loses (README: "Revisions that drop data say so").
    assert audit["downgrade"] == ("Drop the trail: this loses every audit entry, so export "
                                  "it first (``colaflow-mcp audit export``).")
    assert "    Taking it back (db downgrade): Drop the trail: this loses every audit entry" \
        in text

    up = cli(tmp_path, url, "db", "upgrade")
    assert up.stdout.strip() == (
        f"upgraded: unversioned (made by release 0.1.0, before versioned migrations) -> {head}")
    assert f"stamped at {migrate.BASELINE}" in up.stderr  # logs go to stderr
    assert cli(tmp_path, url, "db", "current").stdout.strip() == f"{head} (head)"
    again = json.loads(cli(tmp_path, url, "db", "upgrade", "--json").stdout)
    assert again == {"from": head, "fromState": "versioned", "to": head, "head": head,
                     "changed": False}
    assert cli(tmp_path, url, "db", "upgrade").stdout.strip() == f"already at {head}"

    # The release's data is served by the commands as before.
    keys = json.loads(cli(tmp_path, url, "keys", "list", "--tenant", "acme", "--json").stdout)
    assert {k["id"] for k in keys["keys"]} == {MANIFEST["sqlite"]["agentKeyId"],
                                                MANIFEST["sqlite"]["revokedKeyId"]}

    down = cli(tmp_path, url, "db", "downgrade", "base")
    assert down.stdout.strip() == f"downgraded: {head} (head) -> base (no tables)"
    assert json.loads(cli(tmp_path, url, "db", "current", "--json").stdout)["state"] == "empty"


def test_check_mode_commands_refuse_an_old_schema_until_db_upgrade(tmp_path: Path) -> None:
    url = sqlite_release_copy(tmp_path)
    refused = cli(tmp_path, url, "keys", "list", "--tenant", "acme", check=False,
                  COLAFLOW_SCHEMA_UPGRADE="check")
    assert refused.returncode == 1
    assert "run `colaflow-mcp db upgrade`" in refused.stderr and not refused.stdout
    cli(tmp_path, url, "db", "upgrade", COLAFLOW_SCHEMA_UPGRADE="check")
    listed = cli(tmp_path, url, "keys", "list", "--tenant", "acme", "--json",
                 COLAFLOW_SCHEMA_UPGRADE="check")
    assert len(json.loads(listed.stdout)["keys"]) == 2

    bad = cli(tmp_path, url, "keys", "list", "--tenant", "acme", check=False,
              COLAFLOW_SCHEMA_UPGRADE="sometimes")
    assert bad.returncode == 1 and "COLAFLOW_SCHEMA_UPGRADE must be one of" in bad.stderr


def test_db_downgrade_of_an_unknown_revision_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    cli(tmp_path, url, "db", "upgrade")
    r = cli(tmp_path, url, "db", "downgrade", "nope", check=False)
    assert r.returncode != 0 and "nope" in r.stderr
    assert "Traceback" not in r.stderr
    assert cli(tmp_path, url, "db", "current").stdout.strip() == f"{migrate.head()} (head)"


def test_db_current_says_whether_the_release_is_behind_or_ahead(tmp_path: Path) -> None:
    """An operator mid-upgrade reads which side is behind: the database (run `db
    upgrade`) or this release (a newer one upgraded the database)."""
    db = tmp_path / "fresh.db"
    url = f"sqlite:///{db}"
    head = migrate.head()
    previous = next(r.down for r in migrate.history() if r.is_head)
    cli(tmp_path, url, "db", "upgrade")
    cli(tmp_path, url, "db", "downgrade", str(previous))
    behind = cli(tmp_path, url, "db", "current").stdout.strip()
    assert behind == f"{previous} (behind this release's {head}: `colaflow-mcp db upgrade`)"
    cli(tmp_path, url, "db", "upgrade")
    with sqlite3.connect(db) as conn:  # as a newer release would leave it
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")
    ahead = cli(tmp_path, url, "db", "current")
    assert ahead.stdout.strip() == (
        f"9999_from_the_future (newer than this release knows, its newest is {head}: "
        "a newer release upgraded it)")
    assert json.loads(cli(tmp_path, url, "db", "current", "--json").stdout)["atHead"] is False


@pytest.fixture(params=["empty-postgres", "release-postgres", "release-sqlite"])
async def start_db(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    kind = str(request.param)
    if kind == "release-sqlite":
        yield sqlite_release_copy(tmp_path), MANIFEST["sqlite"]
        return
    async with pg_database(release=kind == "release-postgres") as url:
        yield url, MANIFEST["postgres"] if kind == "release-postgres" else None


@pytest.mark.anyio
async def test_three_instances_started_together_all_come_up(
        start_db: tuple[str, dict[str, Any] | None], tmp_path: Path) -> None:
    url, manifest = start_db
    env = {"COLAFLOW_DATABASE_URL": url}

    def start_and_check() -> list[str]:
        with serve_together(env, tmp_path, 3) as servers:
            outputs = []
            for s in servers:
                health = httpx.get(s.base_url + "/health", timeout=10)
                assert health.status_code == 200 and health.json()["database"] == "ok"
                if manifest is not None:  # the release's key works on every instance
                    r = httpx.get(s.base_url + "/api/mcp/pending-changes",
                                  headers={"Authorization": f"Bearer {manifest['agentKey']}"},
                                  timeout=10)
                    assert r.status_code == 200 and r.json()["total"] == 7, r.text
                outputs.append(s.output())
            return outputs

    outputs = await anyio.to_thread.run_sync(start_and_check)
    assert (await migrate.current(async_url(url))).at_head
    # The schema was changed by exactly one of them; the others found it done.
    assert sum("database schema upgraded" in out for out in outputs) == 1
    assert not any("Traceback" in out for out in outputs)
