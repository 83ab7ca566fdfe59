"""The tool tables of docs/mcp.md, generated from the operation table.

``python -m colaflow_mcp.domain.operations.docs`` prints them; a test checks that the
docs hold exactly this text between ``<!-- tools:start -->`` and ``<!-- tools:end -->``.
"""

from __future__ import annotations

import enum
import re
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from colaflow_mcp.domain.operations import OPERATIONS, READS, ProposalOptions
from colaflow_mcp.domain.operations.base import Args


def tool_tables() -> str:
    """Markdown: the proposing tools, then the read tools."""
    lines = ["| tool | over | proposes | arguments (`?` optional) |", "|---|---|---|---|"]
    for op in OPERATIONS.values():
        over = "MCP, REST" if op.mcp else "REST"
        lines.append(f"| `{op.name}` | {over} | {_first_sentence(op.description)} | "
                     f"{_arguments(op.args)} |")
    options = ", ".join(f"`{name}`" for name in ProposalOptions.model_fields)
    lines += ["", f"Every proposing tool also takes {options} (optional).", "",
              "| read tool (MCP) | returns | arguments |", "|---|---|---|"]
    for read in READS.values():
        lines.append(f"| `{read.name}` | {_first_sentence(read.description)} | "
                     f"{_arguments(read.args) or '—'} |")
    return "\n".join(lines)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


def _arguments(model: type[Args]) -> str:
    return ", ".join(_argument(name, field) for name, field in model.model_fields.items())


def _argument(name: str, field: FieldInfo) -> str:
    text = f"`{name}`" + ("" if field.is_required() else "?")
    choices = _choices(field.annotation)
    if choices:
        text += " (" + ", ".join(f"`{c}`" for c in choices) + ")"
    return text


def _choices(annotation: Any) -> list[str]:
    arms = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (
        annotation,)
    for arm in arms:
        if get_origin(arm) is Literal:
            return [str(a) for a in get_args(arm)]
        if isinstance(arm, type) and issubclass(arm, enum.Enum):
            return [str(m.value) for m in arm]
    return []


if __name__ == "__main__":
    print(tool_tables())
