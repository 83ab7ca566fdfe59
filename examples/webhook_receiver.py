"""A webhook receiver for colaflow-mcp: verifies each delivery's signature with the
``standardwebhooks`` library, ignores repeats of a ``webhook-id`` it already handled, and
prints each event as one JSON line.

    pip install standardwebhooks
    COLAFLOW_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000

Standard library HTTP server, for trying things out; in production do the same in your
web framework (verify the raw body before parsing it, answer 2xx quickly).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SEEN: set[str] = set()  # webhook-ids handled (keep them in your database in production)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    webhook: Webhook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            # Checks the signature and that webhook-timestamp is within 5 minutes.
            event = self.webhook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as exc:
            # Said, so that a wrong COLAFLOW_WEBHOOK_SECRET does not look like silence.
            print(f"refused a delivery ({exc}): is COLAFLOW_WEBHOOK_SECRET the secret "
                  "`webhooks add` printed for this URL?", file=sys.stderr, flush=True)
            self.send_response(400)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        with LOCK:
            first = msg_id not in SEEN
            SEEN.add(msg_id)
        if first:  # a retry of a delivery already handled is acknowledged, not redone
            change = event["data"]
            print(json.dumps({"id": msg_id, "type": event["type"],
                              "pendingChangeId": change["pendingChangeId"],
                              "status": change["status"]}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep stdout for events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("COLAFLOW_WEBHOOK_SECRET")
    if not secret:
        sys.exit("set COLAFLOW_WEBHOOK_SECRET to the secret `webhooks add` printed")
    Handler.webhook = Webhook(secret)
    try:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as exc:  # the port is taken, most often
        sys.exit(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
    print(f"listening on http://{args.host}:{server.server_port}/", file=sys.stderr,
          flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
