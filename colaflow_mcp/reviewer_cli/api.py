"""The REST calls the reviewer CLI makes, and what their answers mean for its exit status.

Only HTTP: the CLI is a client of a running server (it may run on another machine).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

PENDING_CHANGES = "/api/mcp/pending-changes"
MAX_PAGE_SIZE = 100  # the REST listing's largest pageSize
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DECIDED = 0, 1, 2, 3


class CliError(Exception):
    """A command failed: the message for stderr and the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(CliError):
    """The server could not be reached (``watch`` tries again)."""


@dataclass(frozen=True)
class Target:
    """Which server, with which reviewer token (a secret: never printed)."""

    url: str
    token: str
    timeout: float

    @property
    def hub_url(self) -> str:
        """The hub's WebSocket address."""
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/hubs/mcp"

    @property
    def headers(self) -> dict[str, str]:
        """The credential, as a header (never in a URL)."""
        return {"Authorization": f"Bearer {self.token}"}

    def user(self) -> str | None:
        """The reviewer the token names (its ``sub``; read, not verified: the server does
        that)."""
        try:
            part = self.token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except (IndexError, ValueError):
            return None
        sub = claims.get("sub") if isinstance(claims, dict) else None
        return sub if isinstance(sub, str) else None


class Api:
    """The pending-change routes of one server."""

    def __init__(self, target: Target, client: httpx.AsyncClient) -> None:
        self.target = target
        self.client = client

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET, the JSON answer; CliError for anything but 200."""
        try:
            r = await self.client.get(self.target.url + path, params=params,
                                      headers=self.target.headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return _answer(r)

    async def change(self, change_id: str) -> dict[str, Any]:
        """One change's JSON."""
        body: dict[str, Any] = await self.get(f"{PENDING_CHANGES}/{_path_id(change_id)}")
        return body

    async def changes(self, status: str | None, limit: int) -> dict[str, Any]:
        """The newest ``limit`` changes (of one status): ``{items, total}``."""
        # Pages of one size (an offset is (page - 1) * pageSize: a smaller last page would
        # start inside the pages before it); a change proposed while we page shifts the
        # rest by one, so a change seen on an earlier page is not listed twice.
        items: dict[str, dict[str, Any]] = {}
        page, total = 1, 0
        while len(items) < limit:
            params: dict[str, Any] = {"page": page, "pageSize": MAX_PAGE_SIZE}
            if status:
                params["status"] = status
            body = await self.get(PENDING_CHANGES, params)
            for item in body["items"]:
                items.setdefault(item["id"], item)
            total = int(body["total"])
            if len(body["items"]) < MAX_PAGE_SIZE:
                break
            page += 1
        return {"items": list(items.values())[:limit], "total": total}

    async def decide(self, change_id: str, action: str, body: dict[str, Any] | None
                     ) -> dict[str, Any]:
        """POST approve or reject; retried once on a connection error (a decision is
        final, so the second answer is 200 or 409: a 409 that names our own decision is
        taken as our success)."""
        path = f"{PENDING_CHANGES}/{_path_id(change_id)}/{action}"
        try:
            r = await self._post(path, body)
        except httpx.TransportError:
            try:
                r = await self._post(path, body)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            if r.status_code == 409:
                mine = await self._ours(change_id, action)
                if mine is not None:
                    return mine
        answer: dict[str, Any] = _answer(r)
        return answer

    async def _post(self, path: str, body: dict[str, Any] | None) -> httpx.Response:
        return await self.client.post(self.target.url + path, json=body,
                                      headers=self.target.headers)

    async def _ours(self, change_id: str, action: str) -> dict[str, Any] | None:
        """The change, if its decision is the one we asked for, by us (the first attempt
        went through but its answer was lost)."""
        change = await self.change(change_id)
        wanted = "Approved" if action == "approve" else "Rejected"
        if change.get("status") == wanted and change.get("decidedBy") == self.target.user():
            return change
        return None

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        return Unreachable(f"cannot reach {self.target.url}: {type(exc).__name__}"
                        f"{f' ({exc})' if str(exc) else ''}")


def _path_id(change_id: str) -> str:
    # One path segment, whatever was typed (the server answers 400 or 404 to a bad id).
    return quote(change_id, safe="") or "-"


def _answer(r: httpx.Response) -> Any:
    """The JSON body of a 2xx; CliError (exit 3 for 409) otherwise."""
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.is_success and body is not None:
        return body
    message = body.get("message") if isinstance(body, dict) else None
    if r.status_code == 409 and isinstance(body, dict):
        raise CliError(f"already decided: {body.get('currentStatus', 'not pending')}",
                       EXIT_DECIDED)
    if r.status_code == 401:
        message = "the server refused the token (missing, invalid or expired): pass a " \
                  "reviewer token (colaflow-mcp token) with --token or COLAFLOW_TOKEN"
    raise CliError(f"{message or r.reason_phrase or 'request failed'} (HTTP {r.status_code})")
