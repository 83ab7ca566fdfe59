"""``colaflow-mcp serve`` shutting down: hub clients on every transport hear Close first."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream
from hubwire import HANDSHAKE, RS, frames, open_ws

pytestmark = pytest.mark.anyio


async def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = await anyio.run_process([sys.executable, "-m", "colaflow_mcp.cli", *args, "--json"],
                                   env=env)
    return dict(json.loads(done.stdout))


async def test_sigterm_sends_close_with_allow_reconnect_on_all_transports(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
           "COLAFLOW_JWT_SECRET": "s" * 40}
    key = (await _cli(env, "keys", "create", "--tenant", "acme"))["key"]
    process = await anyio.open_process(
        [sys.executable, "-m", "colaflow_mcp.cli", "serve", "--port", "0"], env=env)
    assert process.stderr is not None
    log = TextReceiveStream(process.stderr)
    seen = ""
    try:
        with anyio.fail_after(20):
            while "Uvicorn running on http://127.0.0.1:" not in seen:
                seen += await log.receive()
        port = int(seen.split("Uvicorn running on http://127.0.0.1:")[1].split()[0])
        base = f"http://127.0.0.1:{port}/hubs/mcp"
        headers = {"Authorization": f"Bearer {key}"}
        ws = await open_ws(base.replace("http", "ws"), key)
        async with httpx.AsyncClient(headers=headers, timeout=20) as http:
            tokens = []
            for _ in range(2):
                r = await http.post(f"{base}/negotiate?negotiateVersion=1")
                tokens.append(r.json()["connectionToken"])
            sse_url, lp_url = (f"{base}?id={t}" for t in tokens)
            await http.get(lp_url)
            await http.post(lp_url, content=HANDSHAKE)
            assert (await http.get(lp_url)).text == "{}" + RS
            results: dict[str, Any] = {}

            async def long_poll() -> None:
                results["lp"] = frames((await http.get(lp_url)).text)

            async def sse() -> None:
                got: list[dict[str, Any]] = []
                async with http.stream("GET", sse_url,
                                       headers={"Accept": "text/event-stream"}) as stream:
                    await http.post(sse_url, content=HANDSHAKE)
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            got.extend(frames(line[6:]))
                            if len(got) == 1:
                                sse_ready.set()
                results["sse"] = got

            sse_ready = anyio.Event()
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(long_poll)  # held by the server before the SSE is ready
                    tg.start_soon(sse)
                    await sse_ready.wait()
                    process.send_signal(signal.SIGTERM)
                    close = await ws.drain_until(lambda m: m.get("type") == 7)
            assert close == {"type": 7, "error": "Server is shutting down.",
                             "allowReconnect": True}
            assert results["lp"][-1]["allowReconnect"] is True
            assert results["sse"][0] == {} and results["sse"][-1]["allowReconnect"] is True
        with anyio.fail_after(15):
            # uvicorn re-raises the signal it caught once it has shut down cleanly.
            assert await process.wait() in (0, -signal.SIGTERM)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
