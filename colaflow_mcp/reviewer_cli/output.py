"""What the reviewer CLI prints: one line per change or event, or JSON.

Agents write summaries, arguments and reasons: every such string is printed with its
control characters escaped, so nothing an agent proposes can drive the reviewer's terminal.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO

DECISION_EVENTS = {
    "Approved": "PendingChangeApproved",
    "Rejected": "PendingChangeRejected",
    "Expired": "PendingChangeExpired",
}
CREATED = "PendingChangeCreated"
PENDING = "Pending"  # ``watch``: a change already waiting when it started


def clean(value: object) -> str:
    """``value`` as text with every non-printable character escaped (``\\x1b``, ``\\n``)."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def emit(obj: Any, out: TextIO | None = None) -> None:
    """One line, flushed (``watch`` is read as it runs)."""
    stream = out or sys.stdout
    stream.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    stream.flush()


def _proposer(change: dict[str, Any]) -> str:
    by = change.get("proposedBy")
    if isinstance(by, dict) and (by.get("keyName") or by.get("keyId")):
        return f" by {clean(by.get('keyName') or by.get('keyId'))}"
    return ""


def change_line(change: dict[str, Any]) -> str:
    """``changes list``: id, status, tool, creation time, summary."""
    return (f"{change.get('id')}  {clean(change.get('status')):<8}  "
            f"{clean(change.get('toolName')):<16}  {clean(change.get('createdAt'))}  "
            f"{clean(change.get('summary'))}")


def _result(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    if result.get("success"):
        entity = result.get("entityId")
        return f"executed{f' ({clean(entity)})' if entity else ''}"
    return f"execution failed: {clean(result.get('error'))}"


def change_details(change: dict[str, Any]) -> str:
    """``changes show``: the change, a field per line, then its diff."""
    rows = [("status", change.get("status")), ("tool", change.get("toolName")),
            ("summary", change.get("summary"))]
    by = change.get("proposedBy")
    if isinstance(by, dict):
        rows.append(("proposed by", f"{by.get('keyName') or '-'} (key {by.get('keyId')})"))
    rows += [("rationale", change.get("rationale")), ("created", change.get("createdAt")),
             ("expires", change.get("expiresAt")), ("decided", change.get("decidedAt")),
             ("decided by", change.get("decidedBy")), ("reason", change.get("reason")),
             ("result", _result(change.get("executionResult")) or None)]
    if change.get("edited"):
        rows.append(("edited by", change.get("editedBy")))
    lines = [str(change.get("id"))]
    lines += [f"  {name + ':':<12} {clean(value)}" for name, value in rows if value]
    lines.append(f"  {'arguments:':<12} {clean(json.dumps(change.get('arguments')))}")
    fields = (change.get("diff") or {}).get("changedFields") or []
    if fields:
        lines.append("  changes:")
        lines += [f"    {clean(f.get('field'))}: {clean(json.dumps(f.get('oldValue')))} -> "
                  f"{clean(json.dumps(f.get('newValue')))}" for f in fields]
    return "\n".join(lines)


def event_line(event: str, data: dict[str, Any], catch_up: bool = False) -> str:
    """``watch``: one line for a change waiting, created or decided."""
    cid = data.get("pendingChangeId") or data.get("id")
    stamp = datetime.now().strftime("%H:%M:%S")
    if event in (CREATED, PENDING):
        what = "created" if event == CREATED else "pending"
        text = (f"{what:<9} {cid}  {clean(data.get('toolName'))}{_proposer(data)}: "
                f"{clean(data.get('summary'))}")
    else:
        status = clean(data.get("status"))
        by = data.get("approvedBy") or data.get("rejectedBy") or data.get("decidedBy")
        text = f"{status.lower():<9} {cid}"
        if by:
            text += f"  by {clean(by)}"
        if status == "Rejected":
            text += f": {clean(data.get('reason'))}"
        elif status == "Approved":
            text += f"  {_result(data.get('executionResult'))}"
    return f"{stamp}  {text}{'  (while disconnected)' if catch_up else ''}"


def event_json(event: str, data: dict[str, Any], catch_up: bool = False) -> dict[str, Any]:
    """``watch --json``: ``{event, pendingChangeId, data}`` (+ ``catchUp`` for what a
    reconnect found out)."""
    obj: dict[str, Any] = {"event": event,
                           "pendingChangeId": data.get("pendingChangeId") or data.get("id"),
                           "data": data}
    if catch_up:
        obj["catchUp"] = True
    return obj
