"""``colaflow-mcp webhooks add | list | remove | deliveries`` as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.core.test_cli import cli
from tests.procs import cli_env

ALLOW = {"COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}


def run(tmp: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
        ) -> tuple[int, str, str]:
    import subprocess

    full = cli_env({"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp / 'cli.db'}", **(env or {})})
    out = subprocess.run(["colaflow-mcp", *args], cwd=tmp, env=full, capture_output=True,
                         text=True, check=check, timeout=60)
    return out.returncode, out.stdout, out.stderr


def test_add_list_remove_and_the_audit_trail(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/hooks/T0K3N"
    _, out, err = run(tmp_path, "webhooks", "add", "--tenant", "acme", "--url", url,
                      "--events", "pending_change.approved,pending_change.rejected", "--json",
                      env=ALLOW)
    added = json.loads(out)
    assert set(added) == {"id", "url", "events", "secret"}
    assert added["secret"].startswith("whsec_") and added["url"] == url
    assert added["events"] == ["pending_change.approved", "pending_change.rejected"]
    assert added["secret"] not in err

    _, out, _ = run(tmp_path, "webhooks", "add", "--tenant", "acme", "--url",
                    "http://127.0.0.1:9/all", env=ALLOW)
    assert "whsec_" in out  # plain output shows the secret too, once

    listed = json.loads(cli(tmp_path, "webhooks", "list", "--tenant", "acme", "--json").stdout)
    assert [w["id"] for w in listed["webhooks"]][0] == added["id"]
    assert len(listed["webhooks"][1]["events"]) == 4  # default: every event
    text = cli(tmp_path, "webhooks", "list", "--tenant", "acme").stdout
    assert added["secret"] not in text + json.dumps(listed)  # never shown again

    deliveries = json.loads(cli(tmp_path, "webhooks", "deliveries", added["id"],
                                "--json").stdout)
    assert deliveries == {"webhook": added["id"], "deliveries": []}

    cli(tmp_path, "keys", "create", "--tenant", "globex")
    foreign = cli(tmp_path, "webhooks", "remove", added["id"], "--tenant", "globex",
                  check=False)
    assert foreign.returncode == 1 and "no webhook" in foreign.stderr
    assert added["id"] in cli(tmp_path, "webhooks", "remove", added["id"]).stdout
    listed = json.loads(cli(tmp_path, "webhooks", "list", "--tenant", "acme", "--json").stdout)
    assert added["id"] not in [w["id"] for w in listed["webhooks"]]

    lines = cli(tmp_path, "audit", "export", "--tenant", "acme").stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["action"] for e in entries] == ["webhook.added", "webhook.added",
                                              "webhook.removed"]
    assert {e["actor"]["type"] for e in entries} == {"operator"}
    assert entries[0]["data"]["webhookId"] == added["id"]
    exported = "\n".join(lines)
    assert added["secret"] not in exported and "T0K3N" not in exported  # origin only
    assert cli(tmp_path, "audit", "verify", "--tenant", "acme").stdout.strip() == (
        "ok: 3 entries")


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "webhooks", "add", "--tenant", "acme", "--url",
                         "http://localhost:8080/x", check=False)
    assert code == 1 and "loopback" in err and "ALLOW_PRIVATE_NETWORKS" in err and out == ""
    code, _, err = run(tmp_path, "webhooks", "add", "--tenant", "acme", "--url",
                       "ftp://files.example/x", check=False)
    assert code == 1 and "http:// or https://" in err
    code, _, err = run(tmp_path, "webhooks", "add", "--tenant", "acme", "--url",
                       "http://127.0.0.1/x", "--events", "pending_change.exploded",
                       env=ALLOW, check=False)
    assert code == 1 and "unknown event type" in err
    for command in ("remove", "deliveries"):
        code, _, err = run(tmp_path, "webhooks", command, "ep_nope", check=False)
        assert code == 1 and "no webhook" in err
    code, _, err = run(tmp_path, "webhooks", "list", "--tenant", "ghost", check=False)
    assert code == 1 and "no tenant" in err
    listed = json.loads(cli(tmp_path, "webhooks", "list", "--tenant", "acme", "--json").stdout)
    assert listed["webhooks"] == []  # nothing was half-added
    code, _, err = run(tmp_path, "webhooks", "list", "--tenant", "acme",
                       env={"COLAFLOW_WEBHOOK_RETRY_SCHEDULE": "0,soon"}, check=False)
    assert code == 2 and "WEBHOOK_RETRY_SCHEDULE" in err
