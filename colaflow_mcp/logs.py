"""Logging setup; secrets that arrive in query strings never reach a log line."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

# access_token carries API keys (browsers cannot set headers on WebSocket/EventSource);
# id is the SignalR connection token, itself a credential.
_SECRET_PARAMS = re.compile(r"(?i)(\b(?:access_token|api_key|apikey|id|token)=)[^&\s\"]*")
_KEY_RE = re.compile(r"cola_[A-Za-z0-9_\-]{8,}")


def redact(text: str) -> str:
    """Mask secret query parameters and anything shaped like an API key."""
    return _KEY_RE.sub("cola_***", _SECRET_PARAMS.sub(r"\1***", text))


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


def configure(level: str = "info") -> None:
    """Logs to stderr, secrets redacted. ``level`` as in :func:`split_levels`."""
    root, named = split_levels(level)
    logging.basicConfig(
        stream=sys.stderr, level=root.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name, named_level in named.items():
        logging.getLogger(name).setLevel(named_level)
    install_redaction()
