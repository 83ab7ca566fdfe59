"""What the pages show, derived from the change JSON: the diff as rows, the edit form as
fields generated from the tool's argument schema, and field errors of an edit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from colaflow_mcp.domain.operations import OPERATIONS

LONG_TEXT = 500  # strings allowed longer than this get a textarea


@dataclass(frozen=True)
class DiffRow:
    """One field of the diff: its value before and after (None: absent)."""

    field: str
    before: str | None
    after: str | None
    kind: str  # "added" | "changed" | "removed"


def shown(value: Any) -> str:
    """A field value as text: strings as they are, nothing as "(none)", anything else as
    JSON."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def diff_rows(change: dict[str, Any]) -> list[DiffRow]:
    """Create: every field new; update: the changed fields; delete: what disappears."""
    diff = change.get("diff") or {}
    operation = diff.get("operation") or change.get("operation")
    if operation == "Create":
        after = diff.get("after") or {}
        return [DiffRow(k, None, shown(v), "added") for k, v in after.items() if v is not None]
    if operation == "Delete":
        before = diff.get("before") or {}
        return [DiffRow(k, shown(v), None, "removed") for k, v in before.items()
                if v is not None]
    return [DiffRow(c["field"], shown(c.get("oldValue")), shown(c.get("newValue")), "changed")
            for c in diff.get("changedFields") or []]


@dataclass
class FormField:
    """One input of the edit form."""

    name: str
    label: str
    help: str
    kind: str  # "text" | "textarea" | "select" | "number"
    required: bool
    nullable: bool
    value: str
    options: list[str] = field(default_factory=list)
    max_length: int | None = None


def _variants(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The non-null schema of a property and whether null is allowed."""
    options = prop.get("anyOf")
    if not options:
        return prop, False
    concrete = [o for o in options if o.get("type") != "null"]
    return (concrete[0] if concrete else {}), len(concrete) < len(options)


def edit_fields(tool: str, arguments: dict[str, Any]) -> list[FormField]:
    """The edit form of a change: one field per argument of its tool, pre-filled."""
    spec = OPERATIONS.get(tool)
    if spec is None:
        return []
    schema = spec.args.model_json_schema()
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        concrete, nullable = _variants(prop)
        current = arguments.get(name, prop.get("default"))
        max_length = concrete.get("maxLength")
        if "enum" in concrete:
            kind = "select"
        elif concrete.get("type") in ("integer", "number"):
            kind = "number"
        elif max_length is not None and max_length > LONG_TEXT:
            kind = "textarea"
        else:
            kind = "text"
        fields.append(FormField(
            name=name, label=prop.get("title") or name, help=prop.get("description", ""),
            kind=kind, required=name in required, nullable=nullable,
            value="" if current is None else str(current),
            options=[str(o) for o in concrete.get("enum", [])], max_length=max_length))
    return fields


def field_errors(tool: str, arguments: object) -> dict[str, str]:
    """Each bad argument of an edit and what is wrong with it (empty: valid)."""
    spec = OPERATIONS.get(tool)
    if spec is None:
        return {}
    if not isinstance(arguments, dict):
        return {"": "arguments must be an object"}
    try:
        spec.args.model_validate(arguments)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or ""
            errors.setdefault(loc, err["msg"].removeprefix("Value error, "))
        return errors
    return {}
