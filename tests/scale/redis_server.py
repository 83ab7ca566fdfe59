"""A test's own redis-server, to stop and start again (the shared one is never touched)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.harness import absent
from tests.procs import ServerProcess, cli_env, spawn


class RedisServer:
    """``redis-server --port P --save ''`` on a port of its own, stopped and started at will
    (on the same port, as a restarted Redis comes back)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, within: float = 30.0) -> None:
        """Start it (on a free port the first time) and return once it accepts connections."""
        for _ in range(5):
            port = self.port or _free_port()
            server, ready = spawn(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder)],
                self.folder, cli_env(),
                lambda line, port=port: port if "Ready to accept connections" in line else None)
            if ready.wait(within) and server.listening and server.proc.poll() is None:
                self.port, self.process = port, server
                return
            server.stop()
            if self.port:  # the same port is wanted: someone took it meanwhile
                break
        raise RuntimeError(f"redis-server did not start on port {port}")

    def stop(self) -> None:
        """SIGTERM, as an operator's ``systemctl stop redis`` does; waits for the exit."""
        if self.process is not None:
            self.process.stop()
            self.process = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def own_redis(folder: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped when the block ends."""
    if shutil.which("redis-server") is None:
        absent("redis-server is not installed (apt-get install redis-server)")
    redis = RedisServer(folder)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
