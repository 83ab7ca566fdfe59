"""The command line and the README walk-through, as a newcomer runs them."""

from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import anyio
import pytest
from sqlalchemy.engine import make_url

from colaflow_mcp.store.engine import async_url
from tests import pgdb
from tests.harness import database_url_for, require_service
from tests.procs import cli_env, serve

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = cli_env({"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp / 'cli.db'}"})
    return subprocess.run(["colaflow-mcp", *args], cwd=tmp, env=env, capture_output=True,
                          text=True, check=check, timeout=60)


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    out = cli(tmp_path, "keys", "create", "--tenant", "acme", "--name", "bot", "--json")
    data = json.loads(out.stdout)
    assert set(data) >= {"id", "key", "tenant"} and data["tenant"] == "acme"
    assert data["key"].startswith("cola_")
    plain = cli(tmp_path, "keys", "create", "--tenant", "acme").stdout.strip()
    assert re.fullmatch(r"cola_[A-Za-z0-9_\-]{43}", plain)
    listed = json.loads(cli(tmp_path, "keys", "list", "--tenant", "acme", "--json").stdout)
    assert len(listed["keys"]) == 2
    assert data["key"] not in json.dumps(listed)  # keys are never shown again
    assert data["key"] not in cli(tmp_path, "keys", "list", "--tenant", "acme").stdout
    revoked = cli(tmp_path, "keys", "revoke", data["id"])
    assert data["id"] in revoked.stdout
    listed = json.loads(cli(tmp_path, "keys", "list", "--tenant", "acme", "--json").stdout)
    assert [k["revokedAt"] is not None for k in listed["keys"]].count(True) == 1
    assert data["key"] not in revoked.stderr + out.stderr


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    r = cli(tmp_path, "keys", "revoke", "nope", check=False)
    assert r.returncode == 1 and "no API key" in r.stderr
    r = cli(tmp_path, "keys", "list", "--tenant", "ghost", check=False)
    assert r.returncode == 1 and "no tenant" in r.stderr
    r = cli(tmp_path, "projects", "create", "--tenant", "acme", "--key", "w", "--name", "x",
            check=False)
    assert r.returncode == 1 and "project key" in r.stderr
    r = cli(tmp_path, "keys", "create", "--tenant", "bad slug!", check=False)
    assert r.returncode == 1 and "slug" in r.stderr


def test_help_reads_as_text(tmp_path: Path) -> None:
    """``--help`` is for people: plain words, no reStructuredText markup from a docstring."""
    r = cli(tmp_path, "--help")
    assert "Results on stdout, logs on stderr." in r.stdout and "``" not in r.stdout


def test_token_and_login_link_for_an_unknown_tenant_say_they_created_it(tmp_path: Path) -> None:
    cli(tmp_path, "keys", "create", "--tenant", "acme")
    known = cli(tmp_path, "token", "--tenant", "acme", "--user", "alice")
    assert known.stdout.count(".") == 2 and "did not exist" not in known.stderr
    typo = cli(tmp_path, "token", "--tenant", "acm", "--user", "alice")
    assert typo.stdout.count(".") == 2  # still a working token, as before
    assert "tenant 'acm' did not exist and was created" in typo.stderr
    link = cli(tmp_path, "login-link", "--tenant", "Acne", "--user", "alice")
    assert "/inbox/login?token=" in link.stdout
    assert "tenant 'acne' did not exist" in link.stderr and "token=" not in link.stderr
    again = cli(tmp_path, "login-link", "--tenant", "acne", "--user", "alice")
    assert "did not exist" not in again.stderr


@pytest.mark.parametrize("command", ["token", "login-link"])
@pytest.mark.parametrize("user", ["", "   ", "alice\nbob", "x" * 201])
def test_token_and_login_link_refuse_a_user_name_nobody_could_read(
        tmp_path: Path, command: str, user: str) -> None:
    # `--user "$USER"` with USER unset: the token decided as the anonymous "reviewer".
    cli(tmp_path, "keys", "create", "--tenant", "acme")
    r = cli(tmp_path, command, "--tenant", "acme", "--user", user, check=False)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.strip() == "error: user must be 1-200 printable characters", r.stderr
    fresh = cli(tmp_path, command, "--tenant", "newco", "--user", user, check=False)
    assert fresh.returncode == 1 and "did not exist" not in fresh.stderr
    listed = cli(tmp_path, "audit", "verify", "--tenant", "newco", check=False)
    assert listed.returncode == 1 and "no tenant 'newco'" in listed.stderr  # not created
    ok = cli(tmp_path, command, "--tenant", "acme", "--user", "  alice  ", "--json")
    assert json.loads(ok.stdout)["user"] == "alice"


def test_listing_a_misspelt_tenant_says_so_and_creates_nothing(tmp_path: Path) -> None:
    cli(tmp_path, "projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")
    for command in (["projects", "list"], ["keys", "list"], ["webhooks", "list"]):
        r = cli(tmp_path, *command, "--tenant", "acmee", check=False)
        assert r.returncode == 1 and r.stderr.strip() == "error: no tenant 'acmee'", r.stderr
    # Nothing was created by looking: the next read still finds no such tenant.
    r = cli(tmp_path, "audit", "verify", "--tenant", "acmee", check=False)
    assert r.returncode == 1 and "no tenant 'acmee'" in r.stderr
    assert "WEB  Web" in cli(tmp_path, "projects", "list", "--tenant", "acme").stdout


def test_token_is_accepted_by_the_server_the_cli_shares_a_secret_with(tmp_path: Path) -> None:
    import httpx

    cli(tmp_path, "projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")
    token = cli(tmp_path, "token", "--tenant", "acme", "--user", "alice").stdout.strip()
    assert token.count(".") == 2
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    with serve(env, tmp_path) as server:
        r = httpx.get(server.base_url + "/api/projects",
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["items"][0]["key"] == "WEB"


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return block.split("```bash")[1].split("```")[0]


def test_readme_walkthrough_works_as_written(tmp_path: Path) -> None:
    script = _walkthrough()
    with serve({}, tmp_path) as server:  # the default database: colaflow.db in the cwd
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                           env=cli_env({"BASE": server.base_url}), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "colaflow.db").exists()
    out = r.stdout
    assert '"status":"Approved"' in out and '"success":true' in out
    assert '"key":"WEB-1"' in out and '"title":"Fix login"' in out
    # The key never reaches the server's log.
    keys = re.findall(r"cola_[A-Za-z0-9_\-]{43}", out + r.stderr)
    for key in keys:
        assert key not in server.output()


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/x.db", "ftp://nope", "colaflow.db"])
def test_database_url_forms(tmp_path: Path, url: str) -> None:
    env = cli_env({"COLAFLOW_DATABASE_URL": url.format(tmp=tmp_path)})
    r = subprocess.run(["colaflow-mcp", "keys", "create", "--tenant", "t"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    if url.startswith("ftp"):
        assert r.returncode == 1 and "unsupported database" in r.stderr
    elif url == "colaflow.db":  # a path where a URL belongs: one line that says so
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "is not a URL: use sqlite:///path/to.db" in r.stderr
    else:
        assert r.returncode == 0


def _without_root_powers() -> None:
    """(A ``preexec_fn``.) Root writes into any folder whatever its mode: drop the powers
    that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, so that the
    command it execs meets the folder's mode bits as any other user would."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _unopenable_url(tmp_path: Path, where: str, closed_port: int) -> str:
    if where == "sqlite-folder":  # sqlite:///tmp/x.db: three slashes make a relative path
        return f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
    if where == "sqlite-unwritable":
        (tmp_path / "locked").mkdir(mode=0o555)
        return f"sqlite:///{tmp_path / 'locked' / 'x.db'}"
    if where == "postgres-port":
        return f"postgresql://app:s3cret-pw@127.0.0.1:{closed_port}/colaflow"
    require_service("PostgreSQL", *pgdb.admin_address())  # up, but no such database
    return make_url(pgdb.PG_ADMIN_URL).set(
        password="s3cret-pw", database="cola_test_no_such_database").render_as_string(
        hide_password=False)


@pytest.mark.parametrize("where", ["sqlite-folder", "sqlite-unwritable", "postgres-port",
                                   "postgres-database"])
@pytest.mark.parametrize("command", [["projects", "list", "--tenant", "acme"], ["db", "current"],
                                     ["db", "upgrade"], ["serve", "--port", "0"]])
def test_a_database_that_cannot_be_opened_is_said_in_one_line(
        tmp_path: Path, where: str, command: list[str]) -> None:
    # A newcomer's sqlite:///tmp/x.db, a folder the service's user may not write, a
    # PostgreSQL that is not running or has no such database: one line naming the database
    # and why, no traceback (neither uvicorn's lifespan's, for serve, nor one from
    # aiosqlite's thread after the line), no password.
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = _unopenable_url(tmp_path, where, closed.getsockname()[1])
        r = subprocess.run(["colaflow-mcp", *command], cwd=tmp_path,
                           env=cli_env({"COLAFLOW_DATABASE_URL": url}), capture_output=True,
                           text=True, timeout=60, preexec_fn=_without_root_powers)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: cannot open the database: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    if where == "sqlite-folder":
        assert str(tmp_path / "missing" / "x.db") in r.stderr and "no such folder" in r.stderr
        assert not (tmp_path / "missing").exists()
    elif where == "sqlite-unwritable":
        assert str(tmp_path / "locked" / "x.db") in r.stderr
        assert f"the folder {tmp_path / 'locked'} is not writable" in r.stderr
        assert list((tmp_path / "locked").iterdir()) == []
    else:
        assert make_url(url).render_as_string(hide_password=True) in r.stderr
        assert "s3cret-pw" not in r.stderr
        if where == "postgres-database":
            assert 'database "cola_test_no_such_database" does not exist' in r.stderr


@pytest.mark.parametrize("url", ["colaflow.db", "mysql://app@db/colaflow"])
def test_serve_refuses_a_bad_database_url_in_one_line(tmp_path: Path, url: str) -> None:
    env = cli_env({"COLAFLOW_DATABASE_URL": url})
    r = subprocess.run(["colaflow-mcp", "serve", "--port", "0"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "sqlite:///" in r.stderr


@pytest.mark.parametrize("how", ["env", "flag"])
def test_serve_refuses_a_redis_url_without_scheme(tmp_path: Path, how: str) -> None:
    """``host:port`` where redis://host:port belongs: a usage error, not a traceback from
    uvicorn's startup."""
    env = cli_env({"COLAFLOW_REDIS_URL": "127.0.0.1:6379"} if how == "env" else {})
    flag = ["--redis-url", "127.0.0.1:6379"] if how == "flag" else []
    r = subprocess.run(["colaflow-mcp", "serve", "--port", "0", *flag], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "COLAFLOW_REDIS_URL (or --redis-url) must start with redis://" in r.stderr


@pytest.mark.anyio
async def test_postgres_url_with_libpq_sslmode(tmp_path: Path) -> None:
    """``?sslmode=`` (psql's and most hosting providers' spelling) works: asyncpg calls it
    ``ssl``, and passing ``sslmode`` through failed with a TypeError traceback."""
    url = await database_url_for("postgres", tmp_path)
    env = cli_env({"COLAFLOW_DATABASE_URL": f"{url}?sslmode=disable"})
    r = await anyio.to_thread.run_sync(lambda: subprocess.run(
        ["colaflow-mcp", "projects", "create", "--tenant", "t", "--key", "WEB", "--name",
         "Web"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60))
    assert r.returncode == 0, r.stderr
    assert async_url("postgresql://u@h/d?sslmode=require") == \
        "postgresql+asyncpg://u@h/d?ssl=require"


@pytest.mark.parametrize("args", [
    ["token", "--tenant", "acme", "--user", "alice", "--ttl-days", "0"],
    ["token", "--tenant", "acme", "--user", "alice", "--ttl-days", "-1"],
    ["token", "--tenant", "acme", "--user", "alice", "--ttl-days", "nan"],
    ["token", "--tenant", "acme", "--user", "alice", "--ttl-days", "inf"],
    ["token", "--tenant", "acme", "--user", "alice", "--ttl-days", "1e308"],
    ["keys", "create", "--tenant", "acme", "--expires-in-days", "0"],
    ["keys", "create", "--tenant", "acme", "--expires-in-days", "-3"],
    ["keys", "create", "--tenant", "acme", "--expires-in-days", "NaN"],
    ["keys", "create", "--tenant", "acme", "--expires-in-days", "Infinity"],
    ["keys", "create", "--tenant", "acme", "--expires-in-days", "1e9"],
], ids=lambda a: "-".join([a[0], a[-1]]))
def test_nonsense_lifetimes_are_refused_with_exit_2(tmp_path: Path, args: list[str]) -> None:
    r = cli(tmp_path, *args, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    flag = args[-2]
    assert f"argument {flag}" in r.stderr and "positive" in r.stderr
    assert "cola_" not in r.stderr  # nothing was issued
    if args[0] == "keys":  # and nothing was stored
        listed = cli(tmp_path, "keys", "list", "--tenant", "acme", check=False)
        assert listed.returncode == 1 and "no tenant" in listed.stderr


def test_lifetimes_in_days_are_honoured(tmp_path: Path) -> None:
    import time

    import jwt

    token = cli(tmp_path, "token", "--tenant", "acme", "--user", "alice", "--ttl-days",
                "0.5").stdout.strip()
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert abs(exp - (time.time() + 43_200)) < 60
    data = json.loads(cli(tmp_path, "keys", "create", "--tenant", "acme", "--expires-in-days",
                          "2", "--json").stdout)
    from datetime import UTC, datetime, timedelta

    expires = datetime.fromisoformat(data["expiresAt"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=1)


def test_serve_on_a_port_in_use_says_so_and_exits_1(tmp_path: Path) -> None:
    """uvicorn exits 3 when it cannot bind; ``serve`` says so in one ``error:`` line and
    exits 1 (3 is what the ``changes`` commands say of a change already decided)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(["colaflow-mcp", "serve", "--port", str(port)], cwd=tmp_path,
                           env=cli_env({}), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "address already in use" in r.stderr
    assert r.stderr.rstrip().endswith(
        f"error: could not start serving on 127.0.0.1:{port} (the reason is the error "
        "logged above)")


def test_serve_on_port_0_logs_the_port_it_listens_on(tmp_path: Path) -> None:
    """``serve --port 0`` lets the system choose the port; the log says which one (it said
    ``http://127.0.0.1:0`` before binding), and that port answers."""
    import threading
    import urllib.request

    proc = subprocess.Popen(["colaflow-mcp", "serve", "--port", "0"], cwd=tmp_path,
                            env=cli_env({}), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    seen: list[str] = []
    ports: list[int] = []
    found = threading.Event()

    def read() -> None:  # a thread: lines that arrive together all reach the check
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if match:
                ports.append(int(match.group(1)))
                found.set()
        found.set()  # the server ended: let the test fail on what it printed

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(60) and ports, "".join(seen)
        assert ports[0] != 0, "".join(seen)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/health/live",
                                    timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
