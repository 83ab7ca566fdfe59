"""Pending-change ids as callers send them (REST path, tool argument, hub argument, URI)."""

from __future__ import annotations

import re
import uuid

from colaflow_mcp.domain.errors import InvalidArguments

MAX_ID_LENGTH = 64  # any spelling of a UUID fits; longer input is not looked at
# The canonical spelling (what every surface hands out): returned as it is.
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_change_id(value: object) -> str:
    """The canonical UUID string of a pending-change id, or InvalidArguments."""
    if not isinstance(value, str):
        raise InvalidArguments("pending change id must be a UUID string")
    if _CANONICAL.fullmatch(value) is not None:
        return value
    if len(value) <= MAX_ID_LENGTH:
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise InvalidArguments(f"invalid pending change id {value[:64]!r}: must be a UUID")
