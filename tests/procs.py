"""Server processes for tests: `colaflow-mcp serve` on a port the OS picks, ready (and its
port known) when uvicorn says where it listens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)


# uvicorn's start-up line (logged at info, the default level) names the bound port.
_LISTENING = re.compile(r"Uvicorn running on http://[^\s:]+:(\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    listening: bool = False  # uvicorn said so (the process may have exited since)
    # Notified by the pump on every line (and when the output ends).
    new_output: threading.Condition = field(default_factory=threading.Condition)

    def _append(self, line: str) -> None:
        with self.new_output:
            self.log.append(line)
            self.new_output.notify_all()

    def _output_ended(self) -> None:
        with self.new_output:
            self.new_output.notify_all()

    def mark(self) -> int:
        """A position in the output, for :meth:`wait_for_output` ``since``."""
        with self.new_output:
            return len(self.log)

    async def wait_for_output(self, done: Callable[[list[str]], bool], within: float,
                              since: int = 0) -> None:
        """Wait (woken by each new line, bounded by ``within``) until ``done(lines)`` is
        true of the lines written since ``since``."""
        import anyio

        def wait() -> bool:
            with self.new_output:
                return self.new_output.wait_for(
                    lambda: done(self.log[since:]) or self.proc.poll() is not None,
                    timeout=within)

        if not await anyio.to_thread.run_sync(wait) or not done(self.log[since:]):
            raise TimeoutError(f"server output did not show it within {within}s:\n"
                               + "".join(self.log[since:])[-3000:])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no goodbyes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.pump is not None:
            self.pump.join(10)  # everything the process wrote is in ``log`` now

    def output(self) -> str:
        return "".join(self.log)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLAFLOW_")}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def spawn(argv: list[str], cwd: Path, env: dict[str, str],
          ready_port: Callable[[str], int | None], new_session: bool = False
          ) -> tuple[ServerProcess, threading.Event]:
    """Start a process whose output (stdout and stderr) is collected line by line; the event
    is set at the first line for which ``ready_port`` returns the port it listens on (or
    when the process has exited)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_session)
    server = ServerProcess(proc, 0)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server._append(line)
            port = None if server.listening else ready_port(line)
            if port is not None:
                server.port = port
                server.listening = True
                ready.set()
        server._output_ended()
        ready.set()  # exited: stop waiting

    server.pump = threading.Thread(target=pump, daemon=True)
    server.pump.start()
    return server, ready


def _uvicorn_port(line: str) -> int | None:
    listening = _LISTENING.search(line)
    return int(listening.group(1)) if listening is not None else None


def _spawn(env: dict[str, str], cwd: Path, port: int = 0
           ) -> tuple[ServerProcess, threading.Event]:
    """Start `colaflow-mcp serve` on port 0 (or ``port``, to start one again where it
    was); the event is set once uvicorn reports the port it bound (or the process has
    exited).

    (Binding a free port here and handing its number over would leave a window in which
    another process takes it.)
    """
    return spawn([os.path.join(VENV_BIN, "colaflow-mcp"), "serve", "--port", str(port)],
                 cwd, cli_env(env), _uvicorn_port)


@contextmanager
def serve(env: dict[str, str], cwd: Path, ready_timeout: float = 60.0, port: int = 0
          ) -> Iterator[ServerProcess]:
    """Start `colaflow-mcp serve` on port 0 (or ``port``); yields once uvicorn reports the
    port it bound."""
    server, ready = _spawn(env, cwd, port)
    try:
        if not ready.wait(ready_timeout) or server.proc.poll() is not None or not server.port:
            raise RuntimeError("server did not start (or did not log where it listens, "
                               f"which needs log level info):\n{server.output()}")
        yield server
    finally:
        server.stop()


@contextmanager
def serve_together(env: dict[str, str], cwd: Path, count: int,
                   ready_timeout: float = 60.0) -> Iterator[list[ServerProcess]]:
    """Start ``count`` servers at the same moment (all spawned before any is waited on);
    yields them once every one is listening, or raises with the output of those that
    did not start."""
    with serve_each([env] * count, cwd, ready_timeout) as servers:
        yield servers


@contextmanager
def serve_each(envs: list[dict[str, str]], cwd: Path, ready_timeout: float = 60.0
               ) -> Iterator[list[ServerProcess]]:
    """:func:`serve_together` with an environment of its own for each server."""
    started = [_spawn(env, cwd) for env in envs]
    try:
        failed = [s for s, ready in started
                  if not ready.wait(ready_timeout) or not s.listening
                  or s.proc.poll() is not None]
        if failed:
            raise RuntimeError("servers did not start:\n" + "\n---\n".join(
                s.output()[-3000:] for s in failed))
        yield [s for s, _ in started]
    finally:
        for s, _ in started:
            s.stop()


class AsyncServe:
    """`serve()` for async tests: start/stop off the event loop thread."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int = 0) -> None:
        self._cm = serve(env, cwd, port=port)
        self.server: ServerProcess | None = None

    async def __aenter__(self) -> ServerProcess:
        import anyio

        self.server = await anyio.to_thread.run_sync(self._cm.__enter__)
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        import anyio

        await anyio.to_thread.run_sync(self._cm.__exit__, None, None, None)
