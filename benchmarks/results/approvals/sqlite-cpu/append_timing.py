"""CPU per ``audit.append`` of a decision's two entries, in isolation: one open SQLite
transaction, 3 × 3,000 appends (minus an empty loop), the tree on PYTHONPATH:
``PYTHONPATH=<tree> python append_timing.py <label>``."""
import sys
import tempfile
import time

from sqlalchemy import create_engine
from sqlmodel import Session, SQLModel

import colaflow_mcp.store.tables  # noqa: F401 (the tables)
from colaflow_mcp.domain import audit
from colaflow_mcp.domain.recording import Actor, Transition

path = tempfile.mktemp(suffix=".db")
conn = create_engine(f"sqlite:///{path}")
SQLModel.metadata.create_all(conn)
c = conn.connect()
actor = Actor("reviewer", "rita", "rita")
ts = [Transition("change.approved", "t1", actor, None, {"edited": False}),
      Transition("change.executed", "t1", actor, None, {
          "success": True, "entityId": "0b6f1f0e-3c0a-4c1e-9a7e-1c2d3e4f5a6b", "error": None})]
session = Session(bind=c, expire_on_commit=False)
session.begin()
held = session.connection()


def once() -> None:
    audit.append(held, "t1", ts)


def noop() -> None:
    return None


for f in (once, noop):
    for _ in range(200):
        f()
res: dict[str, list[float]] = {}
for _round in range(3):
    for f in (once, noop):
        t = time.process_time()
        for _ in range(3000):
            f()
        res.setdefault(f.__name__, []).append((time.process_time() - t) / 3000 * 1e6)
print(sys.argv[1], {k: [round(x, 1) for x in v] for k, v in res.items()},
      "append us:", round(min(res["once"]) - min(res["noop"]), 1))
