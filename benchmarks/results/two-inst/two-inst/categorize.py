"""py-spy raw (collapsed) profiles of the instances, in categories, as ms per approval.

python categorize.py APPROVALS RATE FILE... (samples / RATE = seconds; / APPROVALS)
"""
import sys

CATS = [  # first match (by inclusive frame substring) wins, in this order
    ("sweep/reconcile", ("Recovery.",)),
    ("marker", ("Outbox.run_marker",)),
    ("publisher (to Redis)", ("Outbox.run_publisher",)),
    ("backplane receive+decode+dispatch", ("RedisBackplane._listen", "RedisBackplane._watch")),
    ("decision: DB group (in approve)", ("TransactionGroups.",)),
    ("decision: local dispatch to hub", ("Notifier.dispatch", "_stages.<locals>.dispatch")),
    ("decision: rest of the route", ("decide_route.py",)),
    ("HTTP server (uvicorn, outside route)", ("uvicorn/protocols/http",)),
    ("hub connections (websocket I/O)", ("websockets", "hub/")),
    ("event loop (C: I/O, callbacks; leaf Runner.run)", ("Runner.run",)),
]


def main() -> None:
    approvals, rate = int(sys.argv[1]), float(sys.argv[2])
    for path in sys.argv[3:]:
        totals: dict[str, int] = {}
        for line in open(path):
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            cat = "other"
            for name, keys in CATS:
                if name.startswith("event loop"):
                    if frames[-1].startswith("Runner.run"):
                        cat = name
                        break
                    continue
                if any(k in f for f in frames for k in keys):
                    cat = name
                    break
            totals[cat] = totals.get(cat, 0) + int(n)
        total = sum(totals.values())
        print(f"== {path}: {total} samples = {total / rate:.2f} s, "
              f"{total / rate * 1000 / approvals:.3f} ms/approval")
        for cat, n in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"  {n / rate * 1000 / approvals:7.3f} ms  {cat}")


main()
