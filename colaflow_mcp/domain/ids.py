"""Pending-change ids as callers send them (REST path, tool argument, hub argument, URI)."""

from __future__ import annotations

import uuid

from colaflow_mcp.domain.errors import InvalidArguments

MAX_ID_LENGTH = 64  # any spelling of a UUID fits; longer input is not looked at


def parse_change_id(value: object) -> str:
    """The canonical UUID string of a pending-change id, or InvalidArguments."""
    if not isinstance(value, str):
        raise InvalidArguments("pending change id must be a UUID string")
    if len(value) <= MAX_ID_LENGTH:
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise InvalidArguments(f"invalid pending change id {value[:64]!r}: must be a UUID")
