"""Share of py-spy's GIL samples (collapsed stacks) per layer of a served SQLite approval,
on main after approve-raw (DecideRoute): python layers2.py <collapsed.txt> [...].
Each sample goes to the first rule with a frame on its stack (rules in order)."""
import collections
import sys

RULES = [
    ("tx thread: claim (_claim_all)", "_claim_all ("),
    ("tx thread: execution (create_issue)", "_execute_all ("),
    ("tx thread: results + audit entries (+ webhook check)", "ChangeService._record_decided ("),
    ("tx thread: outbox marker (announced_at)", "Outbox._mark_announced.<locals>"),
    ("tx thread: session, BEGIN/COMMIT, other", "WorkerThread.run ("),
    ("hub push: frame write to the subscriber's socket", "_Socket._write ("),
    ("announce: event, dispatch, framing (hub)", "Outbox.announce ("),
    ("decision hand-off on the loop (groups, to_thread, writer lock)", "TransactionGroups.run ("),
    ("answer: change_to_json", "change_to_json ("),
    ("answer: json.dumps", "_decide (colaflow_mcp/rest/decide_route.py:62)"),
    ("answer: send (uvicorn, write())", "RequestResponseCycle.send ("),
    ("request: body read + JSON + validation", "_body ("),
    ("request: validation", "_validated ("),
    ("auth: API key / token check", "Authenticator.authenticate ("),
    ("handler: other (DecideRoute, approve)", "_decide (colaflow_mcp/rest/decide_route.py"),
    ("middleware (LogScope, Starlette, proxy headers)", "ProxyHeadersMiddleware.__call__ ("),
    ("uvicorn: HTTP parsing (httptools)", "HttpToolsProtocol."),
    ("WebSocket: subscribers' frames read", "WebSocketsSansIOProtocol."),
    ("supervisor loops (marker, timers, expiry, revoke, sweep)", "Supervisor._guard ("),
    ("event loop itself, other", ""),
]


def layers(path: str) -> tuple[int, collections.Counter[str]]:
    c: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for name, marker in RULES:
            if marker in stack:
                c[name] += int(n)
                break
    return total, c


if __name__ == "__main__":
    runs = [layers(p) for p in sys.argv[1:]]
    print("| layer | " + " | ".join(p.rsplit("/", 1)[-1] for p in sys.argv[1:]) + " |")
    print("|---|" + "---|" * len(runs))
    for name, _ in RULES:
        print(f"| {name} | " + " | ".join(f"{100 * c[name] / t:.1f} %" for t, c in runs) + " |")
    print("| samples | " + " | ".join(str(t) for t, _ in runs) + " |")
