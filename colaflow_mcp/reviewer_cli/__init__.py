"""``colaflow-mcp changes list | show | approve | reject | watch``: the reviewer's side from
a terminal, as a client of a running server (REST, and the hub for ``watch``).

An edge of its own that speaks only HTTP: it imports no domain, store or delivery code
(lint-imports holds it to that), so it works against any server it can reach.
Exit status: 0 done, 1 failed (message on stderr), 2 usage, 3 the change was already
decided.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from colaflow_mcp.config import Settings
from colaflow_mcp.reviewer_cli.api import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Api,
    CliError,
    Target,
)
from colaflow_mcp.reviewer_cli.hubclient import Timing
from colaflow_mcp.reviewer_cli.output import change_details, change_line, clean, emit
from colaflow_mcp.reviewer_cli.watch import watch

DEFAULT_URL = "http://127.0.0.1:8000"
STATUSES = ("Pending", "Approved", "Rejected", "Expired")


def _status(raw: str) -> str:
    """argparse type: a status, any case."""
    for status in STATUSES:
        if raw.lower() == status.lower():
            return status
    raise argparse.ArgumentTypeError(f"one of {', '.join(STATUSES)}, not {raw!r}")


def _json_object(raw: str) -> dict[str, Any]:
    """argparse type: a JSON object (the complete arguments of the change's tool)."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"title\": \"…\"}'")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(sub: Any) -> None:
    """Add ``changes`` and its commands to the CLI's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (default: COLAFLOW_URL or {DEFAULT_URL})")
    common.add_argument("--token", help="a reviewer token (default: COLAFLOW_TOKEN)")
    changes = sub.add_parser("changes", help="review pending changes on a running server")
    csub = changes.add_subparsers(dest="changes_command", required=True)
    cl = csub.add_parser("list", parents=[common], help="the newest changes")
    cl.add_argument("--status", type=_status, help=" | ".join(STATUSES))
    cl.add_argument("--limit", type=_positive_int, default=100, help="at most (default 100)")
    cl.add_argument("--json", action="store_true")
    cs = csub.add_parser("show", parents=[common], help="one change, with its diff")
    cs.add_argument("id")
    cs.add_argument("--json", action="store_true")
    ca = csub.add_parser("approve", parents=[common], help="approve (and so execute)")
    ca.add_argument("id")
    ca.add_argument("--arguments", type=_json_object,
                    help="edit before approving: the complete arguments, as JSON")
    ca.add_argument("--json", action="store_true")
    cr = csub.add_parser("reject", parents=[common], help="reject, with a reason")
    cr.add_argument("id")
    cr.add_argument("--reason", required=True)
    cr.add_argument("--json", action="store_true")
    cw = csub.add_parser("watch", parents=[common],
                         help="the review queue, live: a line per change created or decided")
    cw.add_argument("--json", action="store_true", help="one JSON object per line")


_ENDPOINTS = ("/hubs/mcp", "/mcp", "/api/", "/inbox", "/openapi.json", "/health")


def _endpoint_in(path: str) -> tuple[int, str] | None:
    """Where a ``--url`` path names a service endpoint (``/mcp``, ``/api/…``), and which
    (the first in the path): the base may have a path of its own (a proxy's prefix), an
    endpoint may not."""
    path = path.rstrip("/") + "/"
    found = [(path.find(e.rstrip("/") + "/"), e) for e in _ENDPOINTS]
    return min(((at, e) for at, e in found if at >= 0), default=None)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a ``changes`` command; its exit status."""
    url = (args.url or os.environ.get("COLAFLOW_URL") or DEFAULT_URL).rstrip("/")
    token = args.token or os.environ.get("COLAFLOW_TOKEN")
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
    except ValueError:  # (an unclosed "[", say) not echoed either: it may hold a secret
        return _usage("--url is not a URL: the server's address, e.g. http://127.0.0.1:8000")
    if parts.username is not None or parts.query or parts.fragment:
        # Not echoed: what is wrong with it may be a secret (user:password@, ?token=).
        return _usage("--url is the server's address, without user:password@, ?query or "
                      "#fragment: the reviewer token goes in --token or COLAFLOW_TOKEN")
    if not url.startswith(("http://", "https://")):
        return _usage(f"--url must start with http:// or https://, not {url!r}")
    endpoint = _endpoint_in(parts.path)
    if endpoint is not None:  # an agent's address (…/mcp) pasted where the base belongs
        at, name = endpoint
        return _usage(f"--url is the server's base address, not its {name} endpoint: "
                      f"{url[:len(url) - len(parts.path) + at]!r}")
    if not token:
        return _usage("a reviewer token is needed: --token or COLAFLOW_TOKEN "
                      "(colaflow-mcp token --tenant T --user U prints one)")
    # Request lines would only repeat what the command prints.
    for name in ("httpx", "httpcore", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    target = Target(url, token, settings.reviewer_cli_timeout_seconds)
    try:
        return anyio.run(_command, args, target, settings)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK


def _usage(message: str) -> int:
    print(f"colaflow-mcp changes: error: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _command(args: argparse.Namespace, target: Target, settings: Settings) -> int:
    async with httpx.AsyncClient(timeout=target.timeout) as client:
        api = Api(target, client)
        command = args.changes_command
        if command == "watch":
            timing = Timing(ping_seconds=settings.reviewer_cli_ping_seconds,
                            silence_seconds=settings.reviewer_cli_silence_seconds,
                            open_seconds=target.timeout)
            return await watch(api, args.json, timing,
                               settings.reviewer_cli_max_backoff_seconds)
        if command == "list":
            page = await api.changes(args.status, args.limit)
            emit(page if args.json else "\n".join(map(change_line, page["items"]))
                 or "(no changes)")
            return EXIT_OK
        if command == "show":
            change = await api.change(args.id)
            emit(change if args.json else change_details(change))
            return EXIT_OK
        if command == "approve":
            body = None if args.arguments is None else {"arguments": args.arguments}
            change = await api.decide(args.id, "approve", body)
        else:
            change = await api.decide(args.id, "reject", {"reason": args.reason})
        return _decided(change, args.json)


def _decided(change: dict[str, Any], as_json: bool) -> int:
    """Print a decision; an approval whose execution failed is a failure (exit 1)."""
    result = change.get("executionResult")
    failed = isinstance(result, dict) and not result.get("success")
    if as_json:
        emit(change)
    else:
        line = f"{str(change.get('status', '')).lower()} {change.get('id')}"
        if isinstance(result, dict) and result.get("success"):
            entity = result.get("entityId")
            line += f" (executed{f': {clean(entity)}' if entity else ''})"
        emit(line)
    if failed:
        error = result.get("error") if isinstance(result, dict) else None
        print(f"error: approved, but the execution failed: {clean(error)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


__all__ = ["add_parser", "run"]
