"""CPU per hub frame, queue → written, through ``_Socket`` with a socket whose send never
waits: ``PYTHONPATH=<tree> python writer_micro.py`` (main's tree: a writer task per frame;
the branch's: the writer's first step in place). Best of 5 runs of 20,000 frames."""
import asyncio
import time
from typing import Any

from starlette.websockets import WebSocketState

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub import websockets as ws
from colaflow_mcp.hub.connection import HubConnection
from colaflow_mcp.hub.outbound import Limits


class Hub:
    async def invoke(self, conn: Any, target: str, arguments: list[Any]) -> Any:
        return None

    def closed(self, conn: Any) -> None:
        pass


class Sock:
    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.n = 0

    async def send_text(self, text: str) -> None:
        self.n += 1


async def run(frames: int) -> float:
    conn = HubConnection(connection_id="c", token="t", hub=Hub(),  # type: ignore[arg-type]
                         principal=Principal(kind="agent", tenant_id="t", tenant_slug="t",
                                             api_key_id="k"),
                         limits=Limits(max_message_bytes=1 << 20, outbound_queue_size=1024))
    generation, _ = conn.attach_socket()
    sock = Sock()
    s = ws._Socket(sock, conn, generation, 1.0)  # type: ignore[arg-type]
    conn.bind_socket(generation, s.changed, s.supersede)
    await conn.receive('{"protocol":"json","version":1}\x1e')
    await asyncio.sleep(0)
    text = p.completion_result("1", {"pendingChangeId": "x" * 26, "status": "approved"})
    t0 = time.process_time()
    for _ in range(frames):
        conn.send(text)  # one delivery, then the loop turns (as between two decisions)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    cpu = time.process_time() - t0
    assert sock.n == frames + 1, sock.n
    return cpu / frames * 1e6


def main() -> None:
    import uvloop

    best = min(uvloop.run(run(20_000)) for _ in range(5))
    print(f"{best:.2f} us CPU per frame (incl. two loop turns)")


if __name__ == "__main__":
    main()
