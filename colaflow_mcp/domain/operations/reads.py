"""The read tools' arguments (the reads themselves are in ``domain.queries``)."""

from __future__ import annotations

from pydantic import Field

from colaflow_mcp.domain.operations.base import Args
from colaflow_mcp.store.tables import Status


class GetPendingChangeArgs(Args):
    pending_change_id: str = Field(description="The pendingChangeId a change tool returned.")


class ListPendingChangesArgs(Args):
    status: Status | None = Field(default=None, description="Only changes with this status.")
    page: int = Field(default=1, description="Page number, from 1.")
    page_size: int = Field(default=20, description="Items per page, 1-100.")


class ListProjectsArgs(Args):
    pass


class GetIssueArgs(Args):
    issue_key: str = Field(description="Issue key, e.g. 'WEB-12'.")
