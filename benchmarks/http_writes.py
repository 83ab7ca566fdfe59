"""Server CPU per small JSON answer: uvicorn with the project's HTTP protocol, 8 keep-alive
clients in another process, nothing else (``http_protocols.HeadWithBody`` in isolation).

``python -m benchmarks.http_writes [--requests 20000] [--clients 8]``: prints requests/s
and the server process's CPU per request (user + system, psutil). Run it with another
``colaflow_mcp`` first on ``PYTHONPATH`` to compare (the server inherits it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import psutil  # type: ignore[import-untyped,unused-ignore]

SERVER = r"""
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from colaflow_mcp.config import Settings
from colaflow_mcp.domain.representation import iso
from colaflow_mcp.http_protocols import http_protocol
from datetime import datetime
BODY = {"id": "x" * 26, "status": "Approved", "arguments": {"title": "t" * 40},
        "decidedAt": None}
async def answer(request):
    return JSONResponse({**BODY, "decidedAt": iso(datetime(2026, 11, 30))})
app = Starlette(routes=[Route("/a", answer, methods=["POST"])])
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                        log_config=None, lifespan="off", http=http_protocol(Settings()))
uvicorn.Server(config).run()
"""


async def client(port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (b"POST /a HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
               b"content-length: 2\r\n\r\n{}")
    for _ in range(n):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()


async def load(port: int, requests: int, clients: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, requests // clients) for _ in range(clients)))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_writes",
                                     description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--port", type=int, default=18431)
    args = parser.parse_args()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(args.port)])
    try:
        for _ in range(200):  # until it listens
            try:
                asyncio.run(load(args.port, args.clients, args.clients))
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(load(args.port, 2000, args.clients))  # warm
        server = psutil.Process(proc.pid)
        c0 = server.cpu_times()
        elapsed = asyncio.run(load(args.port, args.requests, args.clients))
        c1 = server.cpu_times()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        print(json.dumps({
            "requests_per_s": round(args.requests / elapsed),
            "server_cpu_us_per_request": round(cpu * 1e6 / args.requests, 1),
            "server_sys_us_per_request": round((c1.system - c0.system) * 1e6 / args.requests, 1),
            "loadavg_1m": os.getloadavg()[0]}))
    finally:
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
