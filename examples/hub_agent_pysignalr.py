"""A Python agent that waits for human decisions on its pending changes over the hub.

    pip install pysignalr
    COLAFLOW_URL=http://127.0.0.1:8000 COLAFLOW_API_KEY=cola_… \\
        python examples/hub_agent_pysignalr.py <pendingChangeId> [<pendingChangeId> …]

Prints one JSON line per decision and exits once every change is decided (an id it
cannot watch -- unknown, another tenant's, malformed -- is said on stderr and dropped, and
the exit status is then 1). It survives dropped connections: after any reconnect it
subscribes again to what is still undecided, and a decision made while it was away is
pushed at once, exactly once. A key the hub refuses (mistyped, revoked) ends it with exit
status 2: reconnecting cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from pysignalr.client import SignalRClient
from pysignalr.exceptions import AuthorizationError
from pysignalr.messages import CompletionMessage

EVENTS = ("PendingChangeApproved", "PendingChangeRejected", "PendingChangeExpired")


class Agent:
    def __init__(self, base_url: str, api_key: str, change_ids: list[str]) -> None:
        self.hub_url = base_url.rstrip("/") + "/hubs/mcp"
        self.api_key = api_key
        self.waiting = set(change_ids)
        self.unwatchable: set[str] = set()
        self.done = asyncio.Event()
        self.opened = False  # the current client connected (its backoff starts over)

    def _client(self) -> SignalRClient:
        # pysignalr calls access_token_factory only after negotiating, but the hub checks
        # the key on negotiate too: send it as a header on every request.
        client = SignalRClient(self.hub_url,
                               headers={"Authorization": f"Bearer {self.api_key}"})
        for name in EVENTS:
            client.on(name, self._decided(name))

        async def on_open() -> None:  # first connect and every reconnect
            self.opened = True
            for change_id in sorted(self.waiting):
                await client.send("SubscribeToPendingChange", [change_id],  # type: ignore[list-item]
                                  on_invocation=self._watching(change_id))

        async def on_error(message: CompletionMessage) -> None:
            pass  # (pysignalr requires one) each invocation's own callback says what failed

        client.on_open(on_open)
        client.on_error(on_error)
        return client

    def _watching(self, change_id: str) -> Any:
        async def on_snapshot(message: CompletionMessage) -> None:
            if message.error:  # unknown, another tenant's or malformed: nothing will come
                print(f"cannot watch {change_id}: {message.error}", file=sys.stderr)
                self.unwatchable.add(change_id)
                self.waiting.discard(change_id)
                if not self.waiting:
                    self.done.set()
                return
            snapshot = message.result or {}
            print(f"watching {change_id} ({snapshot.get('status')})", file=sys.stderr)
        return on_snapshot

    def _decided(self, name: str) -> Any:
        async def handler(args: list[dict[str, Any]]) -> None:
            event = args[0]
            change_id = event["pendingChangeId"]
            if change_id not in self.waiting:
                return
            self.waiting.discard(change_id)
            line = {"event": name, "pendingChangeId": change_id, "status": event["status"]}
            if "executionResult" in event:
                line["executionResult"] = event["executionResult"]
            if "reason" in event:
                line["reason"] = event["reason"]
            print(json.dumps(line), flush=True)
            if not self.waiting:
                self.done.set()
        return handler

    async def run(self) -> int:
        """0 once every change is decided (1 if some could not be watched); 2 if the hub
        refuses the key (a mistyped or revoked key stays refused: reconnecting cannot
        help)."""
        backoff = 0.5
        while not self.done.is_set():
            client = self._client()
            runner = asyncio.create_task(client.run())
            finished = asyncio.create_task(self.done.wait())
            await asyncio.wait({runner, finished}, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            if self.done.is_set():
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner
                break
            # The client gave up (server restarted, connection expired): start afresh.
            error = runner.exception() if not runner.cancelled() else None
            if isinstance(error, AuthorizationError):
                print("the hub refused the API key (401: invalid, revoked or expired); "
                      "COLAFLOW_API_KEY: colaflow-mcp keys create --tenant SLUG prints one",
                      file=sys.stderr)
                return 2
            if self.opened:  # it was connected: a new outage, not the same one going on
                backoff, self.opened = 0.5, False
            print(f"connection ended ({error!r}); reconnecting in {backoff:.1f}s",
                  file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        return 1 if self.unwatchable else 0


def main() -> int:
    api_key = os.environ.get("COLAFLOW_API_KEY")
    ids = sys.argv[1:]
    if ids and ids[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if not api_key or not ids:
        print(__doc__, file=sys.stderr)
        return 2
    agent = Agent(os.environ.get("COLAFLOW_URL", "http://127.0.0.1:8000"), api_key, ids)
    return asyncio.run(agent.run())


if __name__ == "__main__":
    sys.exit(main())
