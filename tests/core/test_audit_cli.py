"""``colaflow-mcp audit verify | export`` as an operator runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from tests.core.test_cli import cli
from tests.procs import cli_env


def test_verify_and_export_a_tenants_trail(tmp_path: Path) -> None:
    made = json.loads(cli(tmp_path, "keys", "create", "--tenant", "acme", "--name", "bot",
                          "--json").stdout)
    cli(tmp_path, "keys", "create", "--tenant", "acme", "--name", "other")
    cli(tmp_path, "keys", "revoke", made["id"])
    cli(tmp_path, "keys", "create", "--tenant", "globex")  # another chain

    ok = cli(tmp_path, "audit", "verify", "--tenant", "acme")
    assert ok.returncode == 0 and ok.stdout.strip() == "ok: 3 entries"
    lines = cli(tmp_path, "audit", "export", "--tenant", "acme").stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["seq"], e["action"]) for e in entries] == [
        (1, "key.created"), (2, "key.created"), (3, "key.revoked")]
    assert entries[0]["data"]["keyId"] == made["id"] and entries[0]["data"]["name"] == "bot"
    assert entries[0]["actor"]["type"] == "operator"
    assert made["key"] not in "".join(lines)  # the key itself is never recorded
    assert [e["prevHash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert set(entries[0]) == {"seq", "at", "actor", "action", "changeId", "data",
                               "prevHash", "hash"}

    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("UPDATE audit_entry SET actor_name = 'someone else' WHERE seq = 2 AND "
                   "tenant_id = (SELECT id FROM tenant WHERE slug = 'acme')")
    broken = cli(tmp_path, "audit", "verify", "--tenant", "acme", check=False)
    assert broken.returncode == 1 and "seq 2" in broken.stdout, broken
    as_json = json.loads(cli(tmp_path, "audit", "verify", "--tenant", "acme", "--json",
                             check=False).stdout)
    assert (as_json["ok"], as_json["brokenSeq"]) == (False, 2)
    assert cli(tmp_path, "audit", "verify", "--tenant", "globex").stdout.strip() == (
        "ok: 1 entries")

    missing = cli(tmp_path, "audit", "verify", "--tenant", "nobody", check=False)
    assert missing.returncode == 1 and "no tenant" in missing.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """``audit export | head -1`` and the like: stdout's reader is gone before the command
    writes (its pipe's read end closed), so every write fails with EPIPE. The command stops
    with exit 1 and says nothing on stderr, no traceback."""
    cli(tmp_path, "keys", "create", "--tenant", "acme", "--name", "bot")
    env = cli_env({"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"})
    for args in (["audit", "export", "--tenant", "acme"],  # streams, flushing each line
                 ["keys", "list", "--tenant", "acme"]):    # one print, flushed at the end
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            r = subprocess.run(["colaflow-mcp", *args], cwd=tmp_path, env=env,
                               stdout=write_end, stderr=subprocess.PIPE, text=True,
                               timeout=60)
        finally:
            os.close(write_end)
        assert r.returncode == 1, (args, r)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, (args, r.stderr)
