"""One supervisor for all background work: named loops, restarted, stopped in order.

Every loop of the process (bus listener, publisher, marker, expiry, announce sweep,
reconcile, hub timers, revocation, webhook sender) and every long-lived service (the MCP
session manager) runs in the supervisor's one task group. A loop that raises is logged with
``logger.exception`` and restarted after a backoff (0.1 s, doubling up to
``loop_max_backoff_seconds``): a loop that died silently is the worst bug a notifier can
have. A loop that fails because the database does not answer says so in one warning line
(then at debug, with a reminder every 5 minutes): readiness reports the outage.
``status()`` is what ``/health`` reports: each loop alive or not, and the passes the
periodic ones completed.

Stopping happens in a stated order (:meth:`Supervisor.stop`):

1. ``stopping`` is set and the stop hooks run (the outbox stops taking decisions);
2. loops started with ``finish=True`` complete their pass and return: the periodic ones
   see ``stopping``, the publisher and marker drain what was queued (so a clean shutdown
   leaves nothing for another instance's sweep); bounded by ``shutdown_grace_seconds``;
3. the other loops are cancelled (they hold no transaction: the bus listener, timers);
4. services are left, last started first (MCP sessions end);
5. the task group is cancelled (one-off tasks such as session pumps).

Cancelling a loop in the middle of a database call would make SQLAlchemy terminate the
aiosqlite connection with a close task that can hang the event loop's close: hence
step 2 before step 3.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from colaflow_mcp.store.engine import unavailable

logger = logging.getLogger(__name__)

LoopFn = Callable[[], Awaitable[None]]
ServiceFactory = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass
class _Loop:
    name: str
    run: LoopFn
    finish: bool  # returns by itself once stopping (True) or is cancelled (False)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    # Until then (monotonic), a failure because the database does not answer is logged at
    # debug: one warning per loop and outage (and a reminder every DOWN_REMINDER_SECONDS),
    # not a traceback at every restart.
    quiet_until: float = 0.0


# How often a loop that keeps failing because the database does not answer says so again.
DOWN_REMINDER_SECONDS = 300.0


@dataclass
class _Service:
    name: str
    factory: ServiceFactory
    release: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)


class Supervisor:
    """Owns one task group and every named loop and service in it."""

    def __init__(self, *, max_backoff: float = 5.0, stop_grace: float = 5.0) -> None:
        self.max_backoff = max_backoff
        self.stop_grace = stop_grace
        self.stopping = anyio.Event()
        self.alive: dict[str, bool] = {}
        # Completed passes of the periodic loops (in /health): how an operator, or a test,
        # sees that sweeps and reconciles really run.
        self.passes: dict[str, int] = {}
        # Set, then replaced, after every completed pass: wait on it to see passes happen.
        self.pass_completed = anyio.Event()
        # Set, then replaced, whenever a loop or service goes up or down (readiness).
        self.alive_changed = anyio.Event()
        self._loops: list[_Loop] = []
        self._services: list[_Service] = []
        self._stop_hooks: list[Callable[[], None]] = []
        self._tg: anyio.abc.TaskGroup | None = None

    # -- declaring ------------------------------------------------------------------------

    def loop(self, name: str, run: LoopFn, *, finish: bool = True) -> None:
        """Run ``run`` under ``name`` until stopped; restart it if it raises.

        ``finish``: the loop returns by itself once :attr:`stopping` is set (or its stop
        hook ran) and is waited for; otherwise it is cancelled at stop.
        """
        self._loops.append(_Loop(name, run, finish))
        self.alive[name] = False

    def service(self, name: str, factory: ServiceFactory) -> None:
        """Enter ``factory()`` at start (before serving) and leave it at stop."""
        self._services.append(_Service(name, factory))
        self.alive[name] = False

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when stopping begins (before waiting for loops to finish)."""
        self._stop_hooks.append(hook)

    # -- running ------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start every service, then every loop; on exit, :meth:`stop`."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                for service in self._services:
                    await tg.start(self._hold, service)
                for loop in self._loops:
                    tg.start_soon(self._guard, loop)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop()
                self._tg = None
                tg.cancel_scope.cancel()

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a one-off task (a session's pump) in the supervisor's task group."""
        if self._tg is None or self.stopping.is_set():
            raise RuntimeError("the supervisor is not running")
        self._tg.start_soon(fn)

    @property
    def running_now(self) -> bool:
        """Started and not stopping."""
        return self._tg is not None and not self.stopping.is_set()

    async def stop(self) -> None:
        """Stop in the order stated in the module docstring; idempotent."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for hook in self._stop_hooks:
            try:
                hook()
            except Exception:
                logger.exception("stop hook failed")
        with anyio.move_on_after(self.stop_grace):
            for loop in self._loops:
                if loop.finish:
                    await loop.done.wait()
        for loop in self._loops:
            loop.scope.cancel()
        for loop in self._loops:
            await loop.done.wait()
        for service in reversed(self._services):
            service.release.set()
            await service.done.wait()

    async def pause(self, seconds: float, wake: anyio.Event | None = None) -> None:
        """Wait ``seconds``, or less if woken or stopping."""
        with anyio.move_on_after(seconds):
            async with anyio.create_task_group() as tg:
                async def stop_on(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_on, self.stopping)
                if wake is not None:
                    tg.start_soon(stop_on, wake)

    def passed(self, name: str) -> None:
        """Count one completed pass of a periodic loop (and log it at debug level)."""
        passes = self.passes[name] = self.passes.get(name, 0) + 1
        logger.debug("loop pass: %s #%d", name, passes)
        self.pass_completed.set()
        self.pass_completed = anyio.Event()

    def status(self) -> dict[str, Any]:
        """``{"loops": {name: alive}, "loopPasses": {name: n}}`` for ``/health``."""
        return {"loops": dict(self.alive), "loopPasses": dict(self.passes)}

    # -- internals ----------------------------------------------------------------------

    def _set_alive(self, name: str, alive: bool) -> None:
        self.alive[name] = alive
        self.alive_changed.set()
        self.alive_changed = anyio.Event()

    async def _guard(self, loop: _Loop) -> None:
        """Run a loop until stopped: log, back off and restart on any error."""
        backoff = 0.1
        try:
            with loop.scope:
                while not self.stopping.is_set():
                    self._set_alive(loop.name, True)
                    try:
                        await loop.run()
                        if not self.stopping.is_set():
                            logger.warning("background loop %s returned; restarting in "
                                           "%.1fs", loop.name, backoff)
                    except Exception as exc:
                        self._failed(loop, exc, backoff)
                    finally:
                        self._set_alive(loop.name, False)
                    await self.pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            loop.done.set()

    def _failed(self, loop: _Loop, exc: Exception, backoff: float) -> None:
        if not unavailable(exc):
            loop.quiet_until = 0.0
            logger.exception("background loop %s failed; restarting in %.1fs", loop.name,
                             backoff, exc_info=exc)
            return
        # Readiness and /health say the database is down; the log says it once per loop.
        now = time.monotonic()
        level = logging.DEBUG if now < loop.quiet_until else logging.WARNING
        if level == logging.WARNING:
            loop.quiet_until = now + DOWN_REMINDER_SECONDS
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:  # a task group's
            leaf = leaf.exceptions[0]
        logger.log(level, "background loop %s: the database does not answer (%s: %s); "
                   "restarting it with backoff up to %gs until it does", loop.name,
                   type(leaf).__name__, _first_line(leaf), self.max_backoff)

    async def _hold(self, service: _Service, *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        try:
            async with service.factory():
                self._set_alive(service.name, True)
                task_status.started()
                try:
                    await service.release.wait()
                finally:
                    self._set_alive(service.name, False)
        finally:
            service.done.set()


def _first_line(exc: BaseException) -> str:
    """The error's own first line (a DBAPIError's text goes on with the statement)."""
    return (str(exc).strip().splitlines() or [""])[0][:200]
