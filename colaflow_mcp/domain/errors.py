"""What can go wrong in the domain; each edge maps these to its own wire answer."""

from __future__ import annotations

from pydantic import ValidationError


class InvalidArguments(ValueError):
    """The caller's input is wrong; the message says what to fix (REST 400, tool error)."""


class ExecutionError(Exception):
    """An approved change could not be applied; nothing of it was applied."""


class NotFound(LookupError):
    """Missing or in another tenant: the two look the same."""


class Conflict(Exception):
    """The change is no longer pending."""

    def __init__(self, status: str) -> None:
        super().__init__(f"pending change is already {status}")
        self.status = status


class Forbidden(PermissionError):
    """The caller's role may not do this."""


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one line: ``field: problem; field: problem`` (each field after
    ``prefix``, e.g. ``arguments.``)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        loc = prefix + loc if loc else prefix.rstrip(".") or "arguments"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
