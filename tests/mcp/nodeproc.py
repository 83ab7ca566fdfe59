"""Run a node script that speaks JSON lines on stdout; skip (or fail in CI) without node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.harness import absent

ROOT = Path(__file__).resolve().parents[2]


def require_node_package(folder: Path, package: str) -> str:
    """The node binary, if it and ``package`` (installed in ``folder``) are there."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (folder / "node_modules" / package / "package.json").is_file():
        problem = f"{package} is not installed: run `npm ci` in {folder.relative_to(ROOT)}"
    if problem is not None:
        absent(problem)
    assert node is not None
    return node


class NodeProcess:
    """A running node script: read its JSON lines, write lines to its stdin."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None and process.stdin is not None
        self.process = process
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.stderr = bytearray()

    async def line(self) -> str:
        """The next stdout line (bounded by the caller's ``fail_after``)."""
        try:
            raw = await self._stdout.receive_until(b"\n", 1 << 20)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            await self.process.wait()
            raise AssertionError(
                f"process exited ({self.process.returncode}) early:\n{self.stderr.decode()}"
            ) from None
        return raw.decode()

    async def line_starting(self, prefix: str) -> str:
        """Skip lines until one starts with ``prefix``; return the rest of it."""
        while True:
            text = await self.line()
            if text.startswith(prefix):
                return text[len(prefix):].strip()

    async def message(self) -> dict[str, Any]:
        """The next JSON line."""
        data: dict[str, Any] = json.loads(await self.line())
        return data

    async def expect(self, step: str) -> dict[str, Any]:
        message = await self.message()
        assert message.get("step") == step, (message, self.stderr.decode())
        return message

    async def send_line(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(text.encode() + b"\n")

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr.extend(chunk)


@asynccontextmanager
async def run_node(node: str, script: Path, args: Sequence[str], cwd: Path,
                   env: dict[str, str] | None = None) -> AsyncIterator[NodeProcess]:
    """Start ``node script args…``; on exit wait for it and require a clean exit code."""
    async with run_process([node, str(script), *args], cwd, env) as proc:
        yield proc


@asynccontextmanager
async def run_process(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None
                      ) -> AsyncIterator[NodeProcess]:
    """Start a process; on exit wait for it and require exit code 0."""
    process = await anyio.open_process(
        list(argv), cwd=str(cwd), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )
    proc = NodeProcess(process)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(proc._drain_stderr)
        try:
            yield proc
            with anyio.fail_after(20):
                code = await process.wait()
            assert code == 0, f"{argv[0]} exited with {code}:\n{proc.stderr.decode()}"
        finally:
            if process.returncode is None:
                process.kill()
            tg.cancel_scope.cancel()
