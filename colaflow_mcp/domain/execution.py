"""Executing approved changes inside their decision's transaction: each in a savepoint
(all of it or none of it, and an error result), or, in a group's first try, a tool's
consecutive changes set-wise and without savepoints (any failure fails the group, which
store/groups.py runs again member by member)."""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session

from colaflow_mcp.domain.errors import ExecutionError
from colaflow_mcp.domain.operations import OPERATIONS, issues
from colaflow_mcp.store.groups import GROUPED
from colaflow_mcp.store.native import native
from colaflow_mcp.store.tables import PendingChange

logger = logging.getLogger(__name__)


# Approved ``create_issue`` changes whose issues the audit append makes: their new ids,
# ``NATIVE_CREATE_ISSUES_MANY``'s parameters, and (filled once written)
# the ids of the issues made.
Deferred = tuple[list[str], list[Any], list[str]]


def deferred_issues(s: Session, changes: list[PendingChange]) -> Deferred | None:
    """In a group's first try on PostgreSQL, when every approved change creates an issue:
    their issues, made later by the audit append's own statement (one round trip fewer,
    ``audit.carry_results``); None: execute them now (``execute_all``). A project gone
    by then fails the group (``issues.check_made``), which runs each decision again alone,
    executed in its savepoint."""
    if (not changes or not s.info.get(GROUPED) or native(s.connection()) is None
            or any(ch.tool_name != _CREATE_ISSUE for ch in changes)):
        return None
    ids, params = issues.new_issues(changes)
    return ids, params, []


_CREATE_ISSUE = "create_issue"


def check_made(changes: list[PendingChange], deferred: Deferred) -> None:
    """ExecutionError if an issue ``deferred_issues`` deferred was not made (its project
    is gone): the group fails and its decisions run again alone."""
    issues.check_made(changes, deferred[0], deferred[2])


def execute_all(s: Session, changes: list[PendingChange]) -> list[dict[str, Any]]:
    """Execute approved changes in order; their results. In a group's first try
    (``GROUPED``, one decision or several), a tool's consecutive changes go to its
    ``execute_many``, without savepoints."""
    if not s.info.get(GROUPED):
        return [execute(s, ch) for ch in changes]
    entity_ids: list[str] = []
    start = 0
    while start < len(changes):
        spec = OPERATIONS[changes[start].tool_name]
        end = start + 1
        while end < len(changes) and changes[end].tool_name == spec.name:
            end += 1
        run = changes[start:end]
        if spec.execute_many is not None and len(run) > 1:
            entity_ids += spec.execute_many(s, run)
        else:
            entity_ids += [spec.execute(s, ch) for ch in run]
        start = end
    return [{"success": True, "entityId": e, "error": None} for e in entity_ids]


def execute(s: Session, change: PendingChange) -> dict[str, Any]:
    """Apply the change inside a savepoint: all of it, or none of it and an error.

    In a group's first try there is no savepoint (two round trips on PostgreSQL; see
    ``execute_all``): any failure raises instead, and store/groups.py runs each decision
    again alone, where this savepoint catches it.
    """
    spec = OPERATIONS[change.tool_name]
    try:
        with s.begin_nested():
            entity_id = spec.execute(s, change)
    except ExecutionError as exc:
        return {"success": False, "entityId": change.entity_id, "error": str(exc)}
    except Exception as exc:
        logger.exception("execution of %s failed", change.id)
        return {"success": False, "entityId": change.entity_id,
                "error": f"execution failed: {type(exc).__name__}"}
    return {"success": True, "entityId": entity_id, "error": None}
