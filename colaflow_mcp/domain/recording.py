"""The one hook of every state transaction: who did what, told to each recorder inside the
transaction that does it.

Every transaction that proposes or decides a change (and each key creation or revocation)
describes itself as :class:`Transition` values and hands them to its recorders while the
transaction is still open, so what they write (the audit entry, a queued webhook delivery)
commits or rolls back with the state it records. The audit trail
(``domain/audit.py: record``) is the first recorder; others plug in beside it through
``ChangeService(recorders=…)``.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlmodel import Session

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.store.tables import PendingChange

ActorType = Literal["agent", "reviewer", "system", "operator"]

# What happened; the audit trail's ``action`` (public names, see the README).
PROPOSED = "change.proposed"
APPROVED = "change.approved"
EXECUTED = "change.executed"
REJECTED = "change.rejected"
EXPIRED = "change.expired"
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
WEBHOOK_ADDED = "webhook.added"
WEBHOOK_REMOVED = "webhook.removed"


@dataclass(frozen=True)
class Actor:
    """Who did it: an agent (its API key), a reviewer, the service itself, an operator."""

    type: ActorType
    id: str
    name: str

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        """The caller as an actor: an agent by key id and name, a reviewer by user."""
        if principal.kind == "agent":
            return cls("agent", principal.api_key_id or "", principal.key_name or "")
        user = principal.user or "reviewer"
        return cls("reviewer", user, user)

    @classmethod
    def operator(cls) -> Actor:
        """Someone at the command line (named by the OS account, where there is one)."""
        try:
            name = getpass.getuser()
        except Exception:  # no passwd entry and no LOGNAME/USER (some containers)
            name = "operator"
        return cls("operator", "cli", name)

    def to_json(self) -> dict[str, str]:
        """``{type, id, name}``."""
        return {"type": self.type, "id": self.id, "name": self.name}


# Unreviewed changes expire on their own.
EXPIRY = Actor("system", "expiry", "expiry")


@dataclass(frozen=True)
class Transition:
    """One thing a transaction does: its action, tenant and actor, the change row as the
    transaction leaves it (None for key changes), and the action's details."""

    action: str
    tenant_id: str
    actor: Actor
    change: PendingChange | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def change_id(self) -> str | None:
        """The change it concerns, if any."""
        return None if self.change is None else self.change.id


class Recorder(Protocol):
    """Writes its rows for a transaction's transitions (in order) with the transaction's
    own session; raising rolls the whole transaction back (the state change is undone)."""

    def __call__(self, s: Session, transitions: Sequence[Transition]) -> None: ...


def record(s: Session, recorders: Iterable[Recorder], *transitions: Transition) -> None:
    """Tell every recorder, in turn, about the transaction's transitions."""
    for recorder in recorders:
        recorder(s, transitions)


__all__ = ["APPROVED", "EXECUTED", "EXPIRED", "EXPIRY", "KEY_CREATED", "KEY_REVOKED",
           "PROPOSED", "REJECTED", "WEBHOOK_ADDED", "WEBHOOK_REMOVED", "Actor", "ActorType",
           "Recorder", "Transition", "record"]
