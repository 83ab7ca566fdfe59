"""Project operations: create, update, delete (an empty project)."""

from __future__ import annotations

from pydantic import Field, field_validator
from sqlmodel import Session, select

from colaflow_mcp.domain.errors import ExecutionError, InvalidArguments
from colaflow_mcp.domain.operations.base import (
    Args,
    Name,
    Plan,
    Text,
    find_project_sync,
    make_diff,
    project_or_invalid,
    project_snapshot,
    require_same,
    valid_project_key,
)
from colaflow_mcp.store.tables import Issue, PendingChange, Project, utcnow


class CreateProjectArgs(Args):
    key: str = Field(description="Unique project key: 2-10 letters/digits starting with a "
                                 "letter, e.g. 'WEB'.")
    name: Name = Field(description="Project name, e.g. 'Website'.")
    description: Text = Field(default="", description="What the project is about.")
    _k = field_validator("key")(valid_project_key)


class UpdateProjectArgs(Args):
    project_key: str = Field(description="Key of the project to change.")
    name: Name | None = Field(default=None, description="New name.")
    description: Text | None = Field(default=None, description="New description.")
    _k = field_validator("project_key")(valid_project_key)


class DeleteProjectArgs(Args):
    project_key: str = Field(description="Key of an empty project to delete.")
    _k = field_validator("project_key")(valid_project_key)


def plan_create_project(s: Session, tenant_id: str, a: CreateProjectArgs) -> Plan:
    """Refuse a key in use; the diff shows the new project."""
    if find_project_sync(s, tenant_id, a.key) is not None:
        raise InvalidArguments(f"project {a.key} already exists")
    after = {"key": a.key, "name": a.name, "description": a.description}
    return Plan(None, make_diff("Create", "Project", None, a.key, None, after),
                f"Create project {a.key} '{a.name}'")


def exec_create_project(s: Session, ch: PendingChange) -> str:
    """Create the project, unless its key was taken meanwhile."""
    after = ch.diff["after"]
    if find_project_sync(s, ch.tenant_id, after["key"]) is not None:
        raise ExecutionError(f"project {after['key']} already exists")
    p = Project(tenant_id=ch.tenant_id, key=after["key"], name=after["name"],
                description=after["description"])
    s.add(p)
    s.flush()
    return p.id


def plan_update_project(s: Session, tenant_id: str, a: UpdateProjectArgs) -> Plan:
    """The diff of the new name and/or description."""
    p = project_or_invalid(s, tenant_id, a.project_key)
    before = project_snapshot(p)
    changes = a.model_dump(exclude={"project_key"}, exclude_none=True)
    if not changes:
        raise InvalidArguments("nothing to change: give name and/or description")
    after = {**before, **changes}
    return Plan(p.id, make_diff("Update", "Project", p.id, p.key, before, after),
                f"Update project {p.key}: {', '.join(sorted(changes))}")


def _current_project(s: Session, ch: PendingChange) -> Project:
    p = s.get(Project, ch.entity_id)
    if p is None or p.tenant_id != ch.tenant_id:
        raise ExecutionError(f"project {ch.diff['entityKey']} no longer exists")
    require_same(project_snapshot(p), ch.diff["before"], f"project {p.key}")
    return p


def exec_update_project(s: Session, ch: PendingChange) -> str:
    """Apply the new fields, if the project is still as the diff saw it."""
    p = _current_project(s, ch)
    p.name, p.description = ch.diff["after"]["name"], ch.diff["after"]["description"]
    p.updated_at = utcnow()
    s.add(p)
    return p.id


def plan_delete_project(s: Session, tenant_id: str, a: DeleteProjectArgs) -> Plan:
    """Only an empty project may be deleted."""
    p = project_or_invalid(s, tenant_id, a.project_key)
    if s.exec(select(Issue.id).where(Issue.project_id == p.id).limit(1)).first():
        raise InvalidArguments(f"project {p.key} still has issues; delete them first")
    before = project_snapshot(p)
    return Plan(p.id, make_diff("Delete", "Project", p.id, p.key, before, None),
                f"Delete project {p.key}")


def exec_delete_project(s: Session, ch: PendingChange) -> str:
    """Delete the project, if it is unchanged and still empty."""
    p = _current_project(s, ch)
    if (s.exec(select(Issue.id).where(Issue.project_id == p.id).limit(1))).first():
        raise ExecutionError(f"project {p.key} has issues now; it can no longer be deleted")
    s.delete(p)
    return p.id
