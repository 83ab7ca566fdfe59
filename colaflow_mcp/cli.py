"""``colaflow-mcp serve | keys | token | login-link | projects | audit | webhooks | db |
changes``: results on stdout, logs on stderr."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio

from colaflow_mcp import logs, reviewer_cli
from colaflow_mcp.config import Settings
from colaflow_mcp.domain import admin, webhooks
from colaflow_mcp.domain.audit import AuditLog, entry_json
from colaflow_mcp.domain.auth import Principal, TokenIssuer, jwt_secret, valid_user
from colaflow_mcp.domain.console import ConsoleAuth
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.domain.representation import iso
from colaflow_mcp.store import migrate
from colaflow_mcp.store.engine import Database, async_url
from colaflow_mcp.store.tables import Tenant, utcnow

logger = logging.getLogger("colaflow_mcp.cli")

# A century: beyond it a lifetime is a typo, and larger values overflow dates.
MAX_DAYS = 36_500.0


def positive_days(raw: str) -> float:
    """argparse type: a positive, finite number of days up to ``MAX_DAYS``."""
    try:
        days = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not math.isfinite(days) or not 0 < days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of days up to {MAX_DAYS:.0f}, not {raw!r}")
    return days


def positive_minutes(raw: str) -> float:
    """argparse type: a positive number of minutes up to a day."""
    try:
        minutes = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not math.isfinite(minutes) or not 0 < minutes <= 1440:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of minutes up to 1440, not {raw!r}")
    return minutes


def _add_login_link(sub: Any) -> None:
    link = sub.add_parser("login-link", help="print a one-time sign-in link to the reviewer "
                          "console (/inbox)")
    link.add_argument("--tenant", required=True)
    link.add_argument("--user", required=True)
    link.add_argument("--base-url", default=None,
                      help="the server's address as the browser reaches it (default: "
                           "http://HOST:PORT from the settings)")
    link.add_argument("--ttl-minutes", type=positive_minutes, default=15.0,
                      help="how long the link can be opened (default 15)")
    link.add_argument("--json", action="store_true")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colaflow-mcp", description="Run the colaflow-mcp server (serve), administer "
        "its database (keys, token, login-link, projects, audit, webhooks, db) or review "
        "changes on a running server (changes). Results on stdout, logs on stderr.")
    p.add_argument("--database-url", help="overrides COLAFLOW_DATABASE_URL")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--redis-url", help="overrides COLAFLOW_REDIS_URL")
    serve.add_argument("--log-level")

    keys = sub.add_parser("keys", help="manage agents' API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key (printed once)")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--name", default="")
    kc.add_argument("--expires-in-days", type=positive_days,
                    help="omit for a key that never expires")
    kc.add_argument("--json", action="store_true")
    kl = ksub.add_parser("list", help="list a tenant's keys")
    kl.add_argument("--tenant", required=True)
    kl.add_argument("--json", action="store_true")
    kr = ksub.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("id")
    kr.add_argument("--json", action="store_true")

    tok = sub.add_parser("token", help="print a reviewer token (JWT)")
    tok.add_argument("--tenant", required=True)
    tok.add_argument("--user", required=True)
    tok.add_argument("--ttl-days", type=positive_days,
                     help="default: COLAFLOW_REVIEWER_TOKEN_TTL_SECONDS (30 days)")
    tok.add_argument("--json", action="store_true")

    _add_login_link(sub)
    proj = sub.add_parser("projects", help="manage projects directly (operators)")
    psub = proj.add_subparsers(dest="projects_command", required=True)
    pc = psub.add_parser("create", help="create a project without review")
    pc.add_argument("--tenant", required=True)
    pc.add_argument("--key", required=True)
    pc.add_argument("--name", required=True)
    pc.add_argument("--description", default="")
    pc.add_argument("--json", action="store_true")
    pl = psub.add_parser("list", help="list a tenant's projects")
    pl.add_argument("--tenant", required=True)
    pl.add_argument("--json", action="store_true")

    aud = sub.add_parser("audit", help="the tamper-evident audit trail (operators)")
    asub = aud.add_subparsers(dest="audit_command", required=True)
    av = asub.add_parser("verify", help="recompute a tenant's hash chain: 'ok: N entries' "
                         "(exit 0) or the first broken seq (exit 1)")
    av.add_argument("--tenant", required=True)
    av.add_argument("--json", action="store_true")
    ae = asub.add_parser("export", help="print a tenant's entries as JSON lines, oldest first")
    ae.add_argument("--tenant", required=True)

    _webhooks_parser(sub)

    db = sub.add_parser("db", help="schema migrations (operators)")
    dsub = db.add_subparsers(dest="db_command", required=True)
    du = dsub.add_parser("upgrade", help="upgrade the schema (to the latest revision)")
    du.add_argument("--to", default="head", help="a revision id (default: head)")
    dd = dsub.add_parser("downgrade", help="downgrade the schema to a revision")
    dd.add_argument("revision", help="a revision id, -1 for one back, base for no tables")
    dc = dsub.add_parser("current", help="the database's revision")
    dh = dsub.add_parser("history", help="every revision this release knows, newest first, "
                         "with its notes")
    dr = dsub.add_parser("revision", help="(developers) write a new revision from the "
                         "models' difference with the database, which must be at head")
    dr.add_argument("-m", "--message", required=True)
    dr.add_argument("--empty", action="store_true", help="no autogenerate: an empty revision")
    for cmd in (du, dd, dc, dh, dr):
        cmd.add_argument("--json", action="store_true")

    reviewer_cli.add_parser(sub)
    return p


def _webhooks_parser(sub: Any) -> None:
    hooks = sub.add_parser("webhooks", help="signed outbound webhooks (operators)")
    hsub = hooks.add_subparsers(dest="webhooks_command", required=True)
    ha = hsub.add_parser("add", help="add an endpoint; prints its signing secret once")
    ha.add_argument("--tenant", required=True)
    ha.add_argument("--url", required=True)
    ha.add_argument("--events", help="comma-separated event types (default: all): "
                    + ", ".join(webhooks.EVENTS))
    ha.add_argument("--json", action="store_true")
    hl = hsub.add_parser("list", help="a tenant's endpoints")
    hl.add_argument("--tenant", required=True)
    hl.add_argument("--json", action="store_true")
    hr = hsub.add_parser("remove", help="remove an endpoint by id")
    hr.add_argument("id")
    hr.add_argument("--tenant", help="only if the endpoint is this tenant's")
    hr.add_argument("--json", action="store_true")
    hd = hsub.add_parser("deliveries", help="an endpoint's newest deliveries and attempts")
    hd.add_argument("id")
    hd.add_argument("--tenant", help="only if the endpoint is this tenant's")
    hd.add_argument("--limit", type=int, default=50)
    hd.add_argument("--json", action="store_true")


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (0 ok, 1 failed, 2 bad settings or usage; 3 for a
    ``changes`` decision on a change already decided)."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, where a reader gone away is handled, not at exit
        return status
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
    # The reader of stdout went away (``audit export | head``, ``changes watch | head -1``):
    # stop quietly, as other Unix tools do, not with a traceback. Later writes (the
    # interpreter's final flush included) go nowhere.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


def _broken_pipe(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_broken_pipe(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(database_url=args.database_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(getattr(args, "log_level", None) or settings.log_level, settings.log_format)
    if args.command == "changes":
        return reviewer_cli.run(args, settings)
    try:  # a bad database URL is said in one line, not a traceback (serve's included)
        async_url(settings.database_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "serve":
        try:
            settings = settings.replace(
                **{k: v for k, v in {"host": args.host, "port": args.port,
                                     "redis_url": args.redis_url}.items() if v is not None})
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return _serve(settings)
    handlers: dict[str, Callable[[Database, Settings, Any], Awaitable[Any]]] = {
        "keys": _keys, "token": _token, "projects": _projects, "audit": _audit,
        "webhooks": _webhooks,
        "login-link": _login_link,
    }
    try:
        if args.command == "db":
            result = anyio.run(_db, settings, args)
        else:
            result = anyio.run(_with_db, handlers[args.command], settings, args)
    except (ValueError, LookupError, migrate.SchemaError, migrate.UnreachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is not None:  # (audit export printed as it read)
        _print(result, args)
    return int(result.get("exit", 0)) if result is not None else 0


async def _with_db(fn: Callable[[Database, Settings, Any], Awaitable[Any]],
                   settings: Settings, args: Any) -> Any:
    db = Database(settings.database_url, settings.db_pool_size)
    try:
        await db.create_schema(settings.schema_upgrade, settings.schema_lock_timeout_seconds)
        return await fn(db, settings, args)
    finally:
        await db.dispose()


def _print(result: Any, args: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result["json"]))
    else:
        print(result["text"])


async def _keys(db: Database, settings: Settings, args: Any) -> dict[str, Any]:
    if args.keys_command == "create":
        tenant = await admin.get_or_create_tenant(db, args.tenant)
        expires = (utcnow() + timedelta(days=args.expires_in_days)
                   if args.expires_in_days is not None else None)
        row, key = await admin.create_api_key(db, tenant, args.name, expires)
        data = {"id": row.id, "key": key, "tenant": tenant.slug, "tenantId": tenant.id,
                "name": row.name, "prefix": row.prefix, "createdAt": iso(row.created_at),
                "expiresAt": iso(row.expires_at)}
        logger.info("created API key %s for tenant %s", row.id, tenant.slug)
        return {"json": data, "text": key}
    if args.keys_command == "list":
        found = await admin.get_tenant(db, args.tenant)
        if found is None:
            raise LookupError(f"no tenant {args.tenant!r}")
        rows = await admin.list_api_keys(db, found)
        items = [{"id": r.id, "name": r.name, "prefix": r.prefix,
                  "createdAt": iso(r.created_at), "expiresAt": iso(r.expires_at),
                  "revokedAt": iso(r.revoked_at), "lastUsedAt": iso(r.last_used_at)}
                 for r in rows]
        lines = [f"{i['id']}  {i['prefix']}…  {i['name'] or '-'}  "
                 f"{'revoked' if i['revokedAt'] else 'active'}  last used {i['lastUsedAt'] or '-'}"
                 for i in items]
        return {"json": {"tenant": found.slug, "keys": items},
                "text": "\n".join(lines) or "(no keys)"}
    revoked = await admin.revoke_api_key(db, args.id)
    if revoked is None:
        raise LookupError(f"no API key {args.id!r}")
    return {"json": {"id": revoked.id, "revokedAt": iso(revoked.revoked_at)},
            "text": f"revoked {revoked.id}"}


async def _reviewers_tenant(db: Database, slug: str) -> Tenant:
    """The tenant a reviewer credential is for; made if new, with a word on stderr, since a
    misspelt slug otherwise gives a credential that sees an empty queue without a hint."""
    existed = await admin.get_tenant(db, slug)
    tenant = await admin.get_or_create_tenant(db, slug)  # (checks the slug)
    if existed is None:
        print(f"note: tenant {tenant.slug!r} did not exist and was created; its queue is "
              "empty until an agent of it proposes (check the spelling if you expected "
              "changes)", file=sys.stderr)
    return tenant


async def _token(db: Database, settings: Settings, args: Any) -> dict[str, Any]:
    user = valid_user(args.user)  # before a new tenant is created for nothing
    tenant = await _reviewers_tenant(db, args.tenant)
    secret = await jwt_secret(db, settings.jwt_secret)
    issuer = TokenIssuer(secret, settings.reviewer_token_ttl_seconds)
    ttl = args.ttl_days * 86400 if args.ttl_days is not None else None
    token = issuer.issue(tenant, user, ttl)
    return {"json": {"token": token, "tenant": tenant.slug, "user": user},
            "text": token}


async def _login_link(db: Database, settings: Settings, args: Any) -> dict[str, Any]:
    """``login-link --tenant T --user U``: the URL, shown once (only its hash is kept)."""
    valid_user(args.user)  # before a new tenant is created for nothing
    tenant = await _reviewers_tenant(db, args.tenant)
    token = await ConsoleAuth(db, settings.console_session_ttl_seconds).create_link(
        tenant, args.user, args.ttl_minutes)
    base = (args.base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must start with http:// or https://, not {base[:40]!r}")
    url = f"{base}/inbox/login?token={token}"
    expires = iso(utcnow() + timedelta(minutes=args.ttl_minutes))
    return {"json": {"url": url, "tenant": tenant.slug, "user": args.user.strip(),
                     "expiresAt": expires},
            "text": url}


async def _projects(db: Database, settings: Settings, args: Any) -> dict[str, Any]:
    if args.projects_command == "list":  # a read: a misspelt slug creates no tenant
        found = await admin.get_tenant(db, args.tenant)
        if found is None:
            raise LookupError(f"no tenant {args.tenant!r}")
    tenant = await admin.get_or_create_tenant(db, args.tenant)
    if args.projects_command == "create":
        p = await admin.create_project_direct(db, tenant.id, args.key, args.name,
                                              args.description)
        return {"json": {"id": p.id, "key": p.key, "name": p.name, "tenant": tenant.slug},
                "text": f"created project {p.key} ({p.id})"}
    principal = Principal(kind="reviewer", tenant_id=tenant.id, tenant_slug=tenant.slug)
    items = await Queries(db).list_projects(principal)
    return {"json": {"tenant": tenant.slug, "projects": items},
            "text": "\n".join(f"{i['key']}  {i['name']}  ({i['issueCount']} issues)"
                              for i in items) or "(no projects)"}


async def _audit(db: Database, settings: Settings, args: Any) -> dict[str, Any] | None:
    """``audit verify | export --tenant T``."""
    tenant = await admin.get_tenant(db, args.tenant)
    if tenant is None:
        raise LookupError(f"no tenant {args.tenant!r}")
    log = AuditLog(db)
    if args.audit_command == "export":
        async for row in log.entries(tenant.id):
            sys.stdout.write(json.dumps(entry_json(row), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return None
    verdict = await log.verify(tenant.id)
    return {"json": {"tenant": tenant.slug, "ok": verdict.ok, "entries": verdict.entries,
                     "brokenSeq": verdict.broken_seq, "problem": verdict.problem},
            "text": verdict.describe(), "exit": 0 if verdict.ok else 1}


async def _webhooks(db: Database, settings: Settings, args: Any) -> dict[str, Any]:
    """``webhooks add | list | remove | deliveries``."""
    command = args.webhooks_command
    tenant = None
    if getattr(args, "tenant", None) is not None:
        tenant = (await admin.get_or_create_tenant(db, args.tenant) if command == "add"
                  else await admin.get_tenant(db, args.tenant))
        if tenant is None:
            raise LookupError(f"no tenant {args.tenant!r}")
    if command == "add":
        assert tenant is not None
        row = await webhooks.add_endpoint(
            db, tenant, args.url, args.events,
            allow_private=settings.webhook_allow_private_networks)
        logger.info("added webhook %s for tenant %s (%s)", row.id, tenant.slug,
                    webhooks.origin_of(row.url))
        data = {"id": row.id, "url": row.url, "events": row.events, "secret": row.secret}
        return {"json": data, "text": f"added webhook {row.id}\nsecret: {row.secret}\n"
                "(the secret is shown only now: receivers verify signatures with it)"}
    if command == "list":
        assert tenant is not None
        items = [webhooks.endpoint_json(r) for r in await webhooks.list_endpoints(db, tenant)]
        return {"json": {"tenant": tenant.slug, "webhooks": items},
                "text": "\n".join(f"{i['id']}  {i['url']}  {','.join(i['events'])}"
                                  for i in items) or "(no webhooks)"}
    if command == "remove":
        row = await webhooks.remove_endpoint(db, args.id, tenant)
        return {"json": {"id": row.id, "removedAt": iso(row.removed_at)},
                "text": f"removed {row.id}"}
    if not 1 <= args.limit <= 1000:
        raise ValueError("--limit must be between 1 and 1000")
    endpoint = await webhooks.get_endpoint(db, args.id, tenant)
    items = await webhooks.deliveries(db, endpoint, args.limit)
    lines = []
    for d in items:
        last = d["attempts"][-1] if d["attempts"] else None
        outcome = ("-" if last is None else
                   f"{last['statusCode'] or '-'} {last['error'] or 'ok'} "
                   f"({last['latencyMs']} ms)")
        lines.append(f"{d['id']}  {d['type']}  {d['state']}  attempts {len(d['attempts'])}"
                     f"  last: {outcome}")
    return {"json": {"webhook": endpoint.id, "deliveries": items},
            "text": "\n".join(lines) or "(no deliveries)"}


async def _db(settings: Settings, args: Any) -> dict[str, Any]:
    """``db upgrade | downgrade | current | history``."""
    if args.db_command == "history":
        revs = migrate.history()
        return {"json": {"head": migrate.head(), "revisions": [
                    {"id": r.id, "down": r.down, "description": r.description,
                     "downgrade": r.downgrade, "head": r.is_head}
                    for r in revs]},
                "text": "\n\n".join(_revision_text(r) for r in revs)}
    url = async_url(settings.database_url)
    timeout = settings.schema_lock_timeout_seconds
    if args.db_command == "revision":
        path = await migrate.new_revision(url, args.message, autogenerate=not args.empty)
        return {"json": {"path": path}, "text": path}
    if args.db_command == "current":
        state = await migrate.current(url, timeout)
        return {"json": {"revision": state.revision, "head": state.head, "state": state.state,
                         "atHead": state.at_head},
                "text": state.describe()}
    if args.db_command == "upgrade":
        moved = await migrate.upgrade(url, args.to, timeout)
    else:
        moved = await migrate.downgrade(url, args.revision, timeout)
    after = moved.after or "base (no tables)"
    text = (f"{args.db_command}d: {moved.before.describe()} -> {after}" if moved.changed
            else f"already at {after}")
    return {"json": {"from": moved.before.revision, "fromState": moved.before.state,
                     "to": moved.after, "head": moved.before.head, "changed": moved.changed},
            "text": text}


def _revision_text(rev: migrate.Revision) -> str:
    """``down -> id (head)``, then the revision's notes, whole (they say what it does not
    carry over), and what taking it back loses, indented."""
    lines = [f"{rev.down or '<base>'} -> {rev.id}{' (head)' if rev.is_head else ''}"]
    lines += [f"    {line}" if line else "" for line in rev.description.splitlines()]
    if rev.downgrade:
        lines += ["", *textwrap.wrap(f"Taking it back (db downgrade): {rev.downgrade}", 88,
                                     initial_indent="    ", subsequent_indent="    ")]
    return "\n".join(lines)


def _serve(settings: Settings) -> int:
    from uvicorn.config import STARTUP_FAILURE

    from colaflow_mcp.app import create_app
    from colaflow_mcp.serving import HubAwareServer, uvicorn_config

    logs.install_redaction()
    try:  # before uvicorn: its lifespan would print a traceback above the reason
        anyio.run(migrate.ensure, async_url(settings.database_url), settings.schema_upgrade,
                  settings.schema_lock_timeout_seconds)
    except (ValueError, migrate.SchemaError, migrate.UnreachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Thousands of long-lived connection objects make default-threshold collections
    # frequent and slow (measured: 5-53 ms pauses twice a second at 10,000 connections).
    gc.set_threshold(50_000, 20, 100)
    server = HubAwareServer(uvicorn_config(create_app(settings), settings),
                            settings.hub_shutdown_seconds)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn could not start: a port in use, a failed lifespan
        if exc.code != STARTUP_FAILURE:  # (3: what ``changes`` says of "already decided")
            raise
        print(f"error: could not start serving on {settings.host}:{settings.port} "
              "(the reason is the error logged above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
