"""Prometheus metrics (``GET /metrics``): what happens, counted where it happens; what is
live, read from the runtime when scraped.

Counters and the latency histogram are process-wide (one ``serve`` is one process, scraped
on its own: docs/operations.md); updating one is an increment or an observation on a child
bound in advance, nothing more, so the hot paths pay no lookup and no allocation. Gauges
(connections, sessions, the backplane) cost nothing between scrapes: :class:`LiveGauges`
reads them from the runtime at scrape time.

Every label set is bounded (tool names, outcomes, surfaces, transports, eras, results):
never an id, a tenant or a URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("approved", "rejected", "expired")
SURFACES = ("hub", "mcp")
# The hub's transport names, as SignalR clients negotiate them.
TRANSPORTS = ("WebSockets", "ServerSentEvents", "LongPolling")
# MCP protocol eras: ``legacy`` sessions (Mcp-Session-Id, ≤ 2025-11-25) and ``modern``
# listen streams (``subscriptions/listen``, 2026-07-28, sessionless).
ERAS = ("legacy", "modern")
WebhookResult = Literal["success", "retry", "failure"]
WEBHOOK_RESULTS: tuple[WebhookResult, ...] = ("success", "retry", "failure")

# A decision reaches a subscriber in about a millisecond on one instance; the sweep and
# reconcile deliver in seconds: the buckets cover both.
NOTIFY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0, 30.0, 60.0)

# No ``*_created`` series: they double every scrape's size and no alert here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

PROPOSALS = Counter("colaflow_proposals", "Pending changes proposed, by tool.", ["tool"],
                    registry=None)
DECISIONS = Counter("colaflow_decisions", "Pending changes decided, by outcome.",
                    ["outcome"], registry=None)
NOTIFY_SECONDS = Histogram(
    "colaflow_notify_seconds",
    "From a decision's commit to its notification written to a subscriber's transport.",
    ["surface"], buckets=NOTIFY_BUCKETS, registry=None)
WEBHOOK_DELIVERIES = Counter(
    "colaflow_webhook_deliveries",
    "Webhook delivery attempts, by result: success (2xx), retry (failed, another attempt "
    "is scheduled), failure (failed, no attempt left).", ["result"], registry=None)

_DECIDED = {o: DECISIONS.labels(o) for o in OUTCOMES}
_NOTIFIED = {s: NOTIFY_SECONDS.labels(s) for s in SURFACES}
_WEBHOOKS = {r: WEBHOOK_DELIVERIES.labels(r) for r in WEBHOOK_RESULTS}
_PROPOSED: dict[str, Counter] = {}
# Tool names come from the operation table, but a caller could pass anything: past this
# many distinct names, the rest are counted under "other" (a bounded label set, always).
_MAX_TOOLS = 64


def known_tools(names: Iterable[str]) -> None:
    """Show these tools at 0 before their first proposal (so ``rate()`` has a series)."""
    for name in names:
        _proposal_counter(name)


def _proposal_counter(tool: str) -> Counter:
    child = _PROPOSED.get(tool)
    if child is None:
        if len(_PROPOSED) >= _MAX_TOOLS:
            tool = "other"
        child = _PROPOSED[tool] = PROPOSALS.labels(tool)
    return child


def proposed(tool: str) -> None:
    """One pending change proposed with ``tool``."""
    child = _PROPOSED.get(tool)
    (child if child is not None else _proposal_counter(tool)).inc()


def decided(status: str) -> None:
    """One decision won (``Approved``, ``Rejected`` or ``Expired``)."""
    child = _DECIDED.get(status.lower())
    if child is not None:
        child.inc()


def notified(surface: Literal["hub", "mcp"], committed_at: float | None) -> None:
    """A decision committed at ``committed_at`` (Unix time) was written to a subscriber's
    transport on ``surface`` just now."""
    if committed_at is not None:
        _NOTIFIED[surface].observe(max(0.0, time.time() - committed_at))


def webhook_delivery(result: WebhookResult) -> None:
    """One webhook delivery attempt ended with ``result`` (called by the webhook sender)."""
    child = _WEBHOOKS.get(result)
    if child is None:
        raise ValueError(f"webhook delivery result must be one of {WEBHOOK_RESULTS}")
    child.inc()


@dataclass(frozen=True)
class Live:
    """What is live in one instance when scraped."""

    hub_connections: dict[str, int] = field(default_factory=dict)  # by transport
    mcp_sessions: dict[str, int] = field(default_factory=dict)  # by era
    backplane_connected: bool = True


class LiveGauges(Collector):
    """The gauges, read from the runtime at scrape time (``read``)."""

    def __init__(self, read: Callable[[], Live]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        """The live gauges (every label value listed, 0 when none)."""
        live = self.read()
        hub = GaugeMetricFamily("colaflow_hub_connections",
                                "Open hub connections, by transport.", labels=["transport"])
        for transport in TRANSPORTS:
            hub.add_metric([transport], live.hub_connections.get(transport, 0))
        mcp = GaugeMetricFamily(
            "colaflow_mcp_sessions",
            "Open MCP sessions (legacy: Mcp-Session-Id; modern: subscriptions/listen "
            "streams), by protocol era.", labels=["era"])
        for era in ERAS:
            mcp.add_metric([era], live.mcp_sessions.get(era, 0))
        bus = GaugeMetricFamily(
            "colaflow_backplane_connected",
            "1 while the backplane is connected (always 1 for the in-process one).",
            value=1 if live.backplane_connected else 0)
        return [hub, mcp, bus]


def registry(read: Callable[[], Live]) -> CollectorRegistry:
    """One app's registry: the process-wide counters, its live gauges, and the process's
    own metrics (memory, CPU, open files, garbage collection)."""
    reg = CollectorRegistry(auto_describe=False)  # the gauges read nothing until scraped
    for metric in (PROPOSALS, DECISIONS, NOTIFY_SECONDS, WEBHOOK_DELIVERIES):
        reg.register(metric)
    reg.register(LiveGauges(read))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg
