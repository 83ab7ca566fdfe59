"""One settings object, read from ``COLAFLOW_*`` environment variables; flags override."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "COLAFLOW_"
# What an instance tag may be: safe in a URL, a header and an nginx map, without escaping.
INSTANCE_TAG = re.compile(r"[A-Za-z0-9_-]{1,32}")


def default_database_url() -> str:
    """A SQLite file in the working folder."""
    return f"sqlite:///{Path.cwd() / 'colaflow.db'}"


@dataclass(frozen=True)
class Settings:
    """Every knob of the service: production defaults, tiny values in tests."""

    database_url: str = field(default_factory=default_database_url)
    redis_url: str | None = None
    redis_channel: str = "colaflow:decisions"
    jwt_secret: str | None = field(default=None, repr=False)  # secrets stay out of reprs
    # Secrets that signed reviewer tokens before the current one (comma-separated): their
    # tokens are still accepted, so a rotation does not log every reviewer out at once
    # (docs/operations.md). New tokens are always signed with ``jwt_secret``.
    jwt_previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    pending_change_ttl_seconds: float = 86400.0
    host: str = "127.0.0.1"
    port: int = 8000
    # Host names (``host`` or ``host:port``) that MCP accepts besides loopback; ``*`` = any.
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    log_level: str = "info"
    # "text" (one readable line per record) or "json" (one JSON object per line).
    log_format: str = "text"

    # Operations: ``GET /metrics`` answers only with ``Authorization: Bearer <token>`` when
    # set; ``GET /health/ready`` waits at most this long for the database.
    metrics_token: str | None = field(default=None, repr=False)
    readiness_timeout_seconds: float = 2.0

    # Reviewer tokens.
    reviewer_token_ttl_seconds: float = 30 * 86400.0

    # Decisions and delivery.
    expiry_max_wait_seconds: float = 1.0
    announce_sweep_interval_seconds: float = 1.0
    announce_grace_seconds: float = 2.0
    reconcile_interval_seconds: float = 5.0
    bus_reconnect_max_backoff_seconds: float = 5.0
    api_key_cache_seconds: float = 2.0
    revocation_check_interval_seconds: float = 2.0
    # Connections to PostgreSQL an instance keeps (and as many more under bursts);
    # SQLite writes take turns on one connection anyway.
    db_pool_size: int = 10
    # At most this many concurrent decisions of one tenant share a transaction.
    decision_group_max_size: int = 64
    # At most this many concurrent proposals of one tenant share a transaction.
    proposal_group_max_size: int = 64
    # Test hook: seconds to pause between a decision's commit and its announcement.
    pause_after_commit_seconds: float = 0.0

    # Hub (SignalR) limits and timeouts; defaults match ASP.NET Core SignalR.
    hub_keep_alive_seconds: float = 15.0
    hub_client_timeout_seconds: float = 30.0
    hub_handshake_timeout_seconds: float = 15.0
    hub_disconnect_timeout_seconds: float = 15.0
    hub_long_poll_seconds: float = 90.0
    hub_max_message_bytes: int = 32 * 1024
    hub_outbound_queue_size: int = 1024
    hub_max_subscriptions_per_connection: int = 1000
    # Slow readers: the most bytes one connection may hold for its client (queued for the
    # transport plus, with stateful reconnect, kept unacknowledged for replay); past a
    # quarter of it the client's further input waits until the transport drains, for at
    # most ``hub_drain_timeout_seconds``.
    hub_max_queued_bytes: int = 4 * 1024 * 1024
    hub_drain_timeout_seconds: float = 30.0
    # Live hub connections per API key (or per reviewer): one key cannot exhaust a server.
    hub_max_connections_per_key: int = 100

    # MCP.
    mcp_max_subscriptions_per_session: int = 1000
    mcp_event_history_per_session: int = 1000
    # Live legacy sessions (Mcp-Session-Id) one API key may hold, so that one key cannot
    # use up ``mcp_max_sessions`` (shared by every tenant); 2026-07-28 requests are
    # sessionless and not counted.
    mcp_max_sessions_per_key: int = 100
    mcp_max_sessions: int = 10_000
    # A session with no request in flight and no open GET stream for this long ends.
    mcp_session_idle_timeout_seconds: float = 1800.0
    # SSE ``retry:`` hint on every session stream (at least 2 s): how long a client waits
    # before reconnecting a dropped stream. The Python SDK makes one attempt after it and
    # gives up if that fails, so this is also the longest outage it rides out.
    mcp_sse_retry_seconds: float = 3.0
    # SSE keep-alive comment on every open legacy session stream (sse-starlette's default),
    # sent from one task for all of them: a proxy's idle-read timeout must be longer.
    mcp_sse_ping_seconds: float = 15.0

    # REST.
    max_body_bytes: int = 256 * 1024

    # Routing tag of this instance: hub connection tokens and MCP session ids begin with
    # "<tag>.", so a load balancer can send every later request of a connection or session
    # to the instance that holds it (docs/scale-out.md). Empty: derived from instance_id.
    instance_tag: str = ""

    # Schema migrations at start-up (serve and the CLI, except `db`): "auto" upgrades to the
    # latest revision under a lock; "check" refuses an older schema (run `db upgrade`).
    schema_upgrade: str = "auto"
    # How long start-up waits for another process's migration (the lock) before failing.
    schema_lock_timeout_seconds: float = 600.0
    # HTTP server: a connection that has not sent a complete request head (request line
    # and headers) this long after it opened, or after its first byte of a later request,
    # is closed (uvicorn has no such bound: bare and slowloris connections would stay).
    http_header_timeout_seconds: float = 20.0

    # Background work and shutdown (the supervisor's loops; see runtime.py).
    loop_max_backoff_seconds: float = 5.0  # a failing loop restarts after 0.1 s, doubling
    shutdown_grace_seconds: float = 5.0  # loops finish their pass and drain before cancel
    hub_shutdown_seconds: float = 5.0  # hub clients get Close (allowReconnect) within this
    http_graceful_shutdown_seconds: float = 10.0  # then uvicorn waits this for requests
    db_call_seconds: float = 10.0  # bound on one subscribe's registration and read
    recovery_batch_size: int = 500  # rows per expiry, sweep, reconcile or revocation query
    outbox_size: int = 10_000  # decisions queued for publishing (beyond: left to the sweep)
    publish_batch_size: int = 256
    marker_batch_size: int = 512
    announce_marker_linger_seconds: float = 0.05  # gather marks into one write
    redis_liveness_seconds: float = 6.0  # a silent backplane link is reconnected after this
    redis_connect_timeout_seconds: float = 2.0
    auth_cache_entries: int = 10_000  # verified keys and tokens kept
    hub_flush_grace_seconds: float = 1.0  # a closing hub connection may take to send Close
    hub_timer_slices: int = 10  # one timer pass over all connections, spread over this many
    mcp_request_event_history: int = 32  # events kept per session for request streams

    # Review queue (hub, reviewers): the snapshot's size (the newest pending changes) and
    # how many pending and recently decided change ids one subscriber remembers, so each
    # creation and decision reaches it once.
    review_queue_size: int = 500
    review_queue_recent_decisions: int = 1000

    # The reviewer CLI (`colaflow-mcp changes …`, a client of a running server).
    reviewer_cli_timeout_seconds: float = 30.0  # one HTTP request, or opening the hub
    reviewer_cli_max_backoff_seconds: float = 10.0  # watch reconnects after 0.5 s, doubling
    reviewer_cli_ping_seconds: float = 15.0  # watch's keep-alive pings to the hub
    # A hub that sends nothing (it pings every 15 s) this long is gone: watch reconnects.
    reviewer_cli_silence_seconds: float = 30.0

    # Outbound webhooks (docs/webhooks.md). Seconds before each attempt of a delivery,
    # counted from its event (the first) or from the previous failed attempt: the length
    # is the number of attempts.
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout_seconds: float = 10.0  # one attempt, connect to response head
    # Refuse endpoints that resolve to loopback, private, link-local, multicast, reserved
    # or cloud-metadata addresses (checked when added and again at every connection).
    webhook_allow_private_networks: bool = False
    # The safety net: due deliveries are looked for this often even if nothing woke the
    # sender (a commit on this instance wakes it at once; another instance's, or a retry
    # falling due, is seen by this poll or by the next due time the sender knows of).
    webhook_poll_interval_seconds: float = 2.0
    webhook_batch_size: int = 100  # deliveries claimed per query
    # Claims are at least this far apart, and finished attempts wait this long to be
    # written together: under load, one transaction serves many deliveries.
    webhook_batch_linger_seconds: float = 0.05
    webhook_max_in_flight: int = 64  # requests at once, per instance
    webhook_endpoint_concurrency: int = 4  # requests at once to one endpoint, per instance
    # After a failed attempt, an endpoint gets no other delivery for this long (doubling
    # with each failure in a row, up to the max), so one that is down costs little.
    webhook_endpoint_backoff_seconds: float = 1.0
    webhook_endpoint_max_backoff_seconds: float = 60.0

    # The reviewer console (/inbox): how long a browser session lasts after its login link
    # was opened, the SSE keep-alive of its live queue (a comment line; each also re-checks
    # that the session still holds), and the events one live queue may hold for a slow
    # browser before its stream is closed (the browser reconnects and re-syncs).
    console_session_ttl_seconds: float = 12 * 3600.0
    console_keepalive_seconds: float = 15.0
    console_stream_queue_size: int = 1000

    def __post_init__(self) -> None:
        self.webhook_schedule()  # refuse a bad schedule at start-up
        if self.log_format not in ("text", "json"):
            raise ValueError(f"{ENV_PREFIX}LOG_FORMAT: {self.log_format[:20]!r} must be "
                             "'text' or 'json'")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            # (not echoed: it may hold a password)
            raise ValueError(f"{ENV_PREFIX}REDIS_URL (or --redis-url) must start with redis://, "
                             "rediss:// or unix://, e.g. redis://127.0.0.1:6379/0")
        if self.instance_tag and not INSTANCE_TAG.fullmatch(self.instance_tag):
            raise ValueError(f"{ENV_PREFIX}INSTANCE_TAG: {self.instance_tag[:40]!r} must be 1-32 "
                             "letters, digits, '_' or '-'")

    def webhook_schedule(self) -> tuple[float, ...]:
        """:attr:`webhook_retry_schedule` as numbers: the delay before each attempt."""
        name = f"{ENV_PREFIX}WEBHOOK_RETRY_SCHEDULE"
        try:
            delays = tuple(float(p) for p in self.webhook_retry_schedule.split(","))
        except ValueError:
            raise ValueError(f"{name}: comma-separated seconds, not "
                             f"{self.webhook_retry_schedule[:80]!r}") from None
        if not delays or not all(0 <= d < 10 * 365 * 86400 for d in delays):
            raise ValueError(f"{name}: at least one delay, each 0 or more seconds")
        return delays

    @property
    def webhook_lease_seconds(self) -> float:
        """How long a claimed delivery is this instance's: longer than an attempt can take
        (its timeout bounds the whole attempt), so no other instance sends it meanwhile."""
        return self.webhook_timeout_seconds * 1.5 + 5.0

    def tagged(self, value: str) -> str:
        """``value`` behind this instance's routing tag: ``"<tag>.<value>"``."""
        tag = self.instance_tag
        if not tag:
            tag = (self.instance_id if INSTANCE_TAG.fullmatch(self.instance_id)
                   else hashlib.sha256(self.instance_id.encode()).hexdigest()[:12])
        return f"{tag}.{value}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``COLAFLOW_*`` variables, then explicit overrides (flags)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed."""
        return dataclasses.replace(self, **changes)


def _parse(type_name: Any, raw: str, name: str) -> Any:
    t = str(type_name)
    if t == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: true or false, not {raw!r}")
    try:
        if t.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: not a number: {raw!r}") from exc
    return raw
