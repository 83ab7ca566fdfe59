"""Logging setup: text or JSON lines (``COLAFLOW_LOG_FORMAT``), with the context of the
work at hand (tenant, change, hub connection), and no secret in any line.

Context is kept in context variables (:func:`context`), so it follows a request or a
connection's task without being passed around; JSON lines carry it as fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

# access_token carries API keys (browsers cannot set headers on WebSocket/EventSource);
# id is the SignalR connection token, itself a credential.
_SECRET_PARAMS = re.compile(r"(?i)(\b(?:access_token|api_key|apikey|id|token)=)[^&\s\"]*")
_KEY_RE = re.compile(r"cola_[A-Za-z0-9_\-]{8,}")
# A JWT (reviewer token): base64url header starting '{"', payload, signature.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")


def redact(text: str) -> str:
    """Mask secret query parameters and anything shaped like an API key or a JWT."""
    return _JWT_RE.sub("eyJ***", _KEY_RE.sub("cola_***", _SECRET_PARAMS.sub(r"\1***", text)))


# -- context ------------------------------------------------------------------------------

# The context of the work at hand: one dict per request or connection (``scope``), filled
# in as it becomes known (``bind``). Field names as in JSON lines.
_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("colaflow_log_context", default=None)
_NAMES = {"tenant": "tenant", "change_id": "changeId", "connection_id": "connectionId"}


def open_scope() -> Token[dict[str, str] | None]:
    """:func:`scope` without a context manager: give the token to :func:`close_scope`."""
    return _CONTEXT.set({})


def close_scope(token: Token[dict[str, str] | None]) -> None:
    """End the context :func:`open_scope` opened."""
    _CONTEXT.reset(token)


@contextmanager
def scope() -> Iterator[None]:
    """A fresh context for one request or connection (the app's outermost layer opens one,
    so that uvicorn's access line, written while the response starts, carries it too)."""
    token = _CONTEXT.set({})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(*, tenant: str | None = None, change_id: str | None = None,
         connection_id: str | None = None) -> None:
    """Add what is now known to the current scope's context (none open: a no-op)."""
    context = _CONTEXT.get()
    if context is None:
        return
    for name, value in (("tenant", tenant), ("change_id", change_id),
                        ("connection_id", connection_id)):
        if value is not None:
            context[_NAMES[name]] = value


def current_context() -> dict[str, str]:
    """The context of the code running now."""
    return dict(_CONTEXT.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(current_context())
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The readable line, with a traceback's secrets masked too."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return redact(super().formatException(ei))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and arguments with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args:
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_arg(a) for a in record.args)
            elif isinstance(record.args, dict):
                record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def install_redaction() -> None:
    """Attach the filter to every handler of the loggers that print requests."""
    flt = RedactingFilter()
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "colaflow_mcp"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(flt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(flt)


def split_levels(spec: str) -> tuple[str, dict[str, str]]:
    """``"info,colaflow_mcp.supervisor=debug"`` → ``("info", {"colaflow_mcp.supervisor":
    "DEBUG"})``: the overall level, then levels for named loggers."""
    root, named = "info", {}
    for part in spec.split(","):
        name, sep, level = part.strip().partition("=")
        if sep:
            named[name.strip()] = level.strip().upper()
        elif name:
            root = name
    return root.lower(), named


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "info", fmt: str = "text") -> None:
    """Logs to stderr, secrets redacted. ``level`` as in :func:`split_levels`; ``fmt``
    ``text`` or ``json`` (one JSON object per line)."""
    root, named = split_levels(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=root.upper(), handlers=[handler])
    for name, named_level in named.items():
        logging.getLogger(name).setLevel(named_level)
    install_redaction()
