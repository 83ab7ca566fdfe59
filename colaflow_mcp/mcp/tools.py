"""The MCP tools, generated from the domain's operation table (``domain.operations``).

Each tool's name, description, parameters (with their descriptions, defaults and enums)
and output schema come from the table; this module only says how MCP shows them and what
a call does. Parameters are advertised leniently (plain strings, enums listed for the
model): the domain validates, and its messages name the bad field plainly.
"""

from __future__ import annotations

import enum
import inspect
import json
import textwrap
import types as pytypes
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from pydantic.fields import FieldInfo

from colaflow_mcp import __version__
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.errors import Forbidden, InvalidArguments, NotFound
from colaflow_mcp.domain.operations import (
    PROPOSAL_OUTPUT,
    READS,
    Operation,
    ProposalOptions,
    mcp_operations,
)
from colaflow_mcp.domain.operations.base import Args
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.domain.representation import change_to_json, proposal_json
from colaflow_mcp.domain.uris import PENDING_CHANGE_PREFIX
from colaflow_mcp.mcp.context import require_principal
from colaflow_mcp.store.engine import unavailable
from colaflow_mcp.store.tables import PendingChange

PROPOSE = types.ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                idempotent_hint=False, open_world_hint=False)
READ = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)

Call = Callable[[dict[str, Any]], Awaitable[types.CallToolResult]]

# While the database does not answer (REST says 503 "unavailable"): a tool error the model
# can act on, not the SDK's bare "Error executing tool" and a traceback in the log.
UNAVAILABLE = "the database does not answer; try again shortly"
UNAVAILABLE_PROPOSAL = (UNAVAILABLE + ". The proposal may have been recorded all the same: "
                        "check list_pending_changes before proposing it again")


def instructions() -> str:
    """The server's instructions for the model (the change tools named from the table)."""
    names = ", ".join(op.name for op in mcp_operations())
    return textwrap.fill(
        "ColaFlow is a project tracker (projects, issues, comments). You cannot change it "
        f"directly: every change tool ({names}) only PROPOSES the change. A human reviewer "
        "approves it (then it is applied) or rejects it with a reason; unreviewed proposals "
        "expire. Each change tool returns a pendingChangeId and a resourceUri "
        f"({PENDING_CHANGE_PREFIX}{{id}}). To learn the outcome without polling, subscribe "
        "to that resource; you will receive notifications/resources/updated once it is "
        "decided. Then read the resource (or call get_pending_change): status is Approved, "
        "Rejected (see reason) or Expired, and for approved changes executionResult says "
        "whether applying it succeeded. Use list_projects and get_issue to look things up "
        "before proposing.", width=92)


def build_server(changes: ChangeService, queries: Queries) -> MCPServer:
    """The MCPServer with every tool of the table registered."""
    server: MCPServer = MCPServer(
        "colaflow", title="ColaFlow", version=__version__, instructions=instructions(),
        subscriptions=False,
    )
    for op in mcp_operations():
        params = [*_parameters(op.args), *_parameters(ProposalOptions)]
        returns = Annotated[types.CallToolResult, PROPOSAL_OUTPUT]
        server.add_tool(_function(op.name, params, returns, _proposer(op, changes), True),
                        name=op.name, description=op.description, annotations=PROPOSE)
    readers = _readers(queries)
    for read in READS.values():
        call = readers.pop(read.name)
        server.add_tool(_function(read.name, _parameters(read.args), types.CallToolResult, call,
                                  False),
                        name=read.name, description=read.description, annotations=READ)
    if readers:
        raise RuntimeError(f"MCP read handlers without a table entry: {sorted(readers)}")
    return server


# -- what a call does -----------------------------------------------------------------------

def _proposer(op: Operation, changes: ChangeService) -> Call:
    options = tuple(ProposalOptions.model_fields)

    async def call(kwargs: dict[str, Any]) -> types.CallToolResult:
        principal = require_principal()
        extra = {name: kwargs.pop(name, None) for name in options}
        arguments = {k: v for k, v in kwargs.items() if v is not None}
        try:
            change = await changes.propose(principal, op.name, arguments, **extra)
        except (InvalidArguments, Forbidden) as exc:
            raise ToolError(str(exc)) from None
        return proposal_result(change)

    return call


def _readers(queries: Queries) -> dict[str, Call]:
    """One handler per read tool of the table (checked in :func:`build_server`)."""

    async def get_pending_change(kw: dict[str, Any]) -> types.CallToolResult:
        change_id = kw["pending_change_id"]
        try:
            change = await queries.get_change(require_principal(), change_id)
        except (NotFound, InvalidArguments) as exc:
            raise ToolError(f"pending change {change_id[:64]!r}: {exc}") from None
        return json_result(change_to_json(change))

    async def list_pending_changes(kw: dict[str, Any]) -> types.CallToolResult:
        try:
            page = await queries.list_changes(require_principal(), kw["status"], kw["page"],
                                              kw["page_size"])
        except InvalidArguments as exc:
            raise ToolError(str(exc)) from None
        return json_result(page.to_json())

    async def list_projects(kw: dict[str, Any]) -> types.CallToolResult:
        return json_result({"projects": await queries.list_projects(require_principal())})

    async def get_issue(kw: dict[str, Any]) -> types.CallToolResult:
        try:
            issue = await queries.get_issue(require_principal(), kw["issue_key"])
        except (NotFound, InvalidArguments) as exc:
            raise ToolError(str(exc)) from None
        return json_result(issue)

    return {"get_pending_change": get_pending_change,
            "list_pending_changes": list_pending_changes,
            "list_projects": list_projects, "get_issue": get_issue}


def proposal_result(change: PendingChange) -> types.CallToolResult:
    """Structured proposal plus a one-line summary for the model to read."""
    proposal = proposal_json(change)
    text = (f"Proposed: {change.summary}. Pending change {change.id} awaits human review "
            f"(expires {proposal['expiresAt']}); subscribe to {proposal['resourceUri']} for "
            f"the decision.")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=proposal,
    )


def json_result(data: dict[str, Any]) -> types.CallToolResult:
    """JSON as structured content and as text."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data, default=str))],
        structured_content=data,
    )


# -- how the table's arguments become tool parameters ---------------------------------------

def _function(name: str, params: list[inspect.Parameter], returns: Any, call: Call,
              proposes: bool) -> Callable[..., Awaitable[types.CallToolResult]]:
    """A tool function whose signature the SDK reads (``inspect.signature``)."""

    async def tool(**kwargs: Any) -> types.CallToolResult:
        try:
            return await call(kwargs)
        except Exception as exc:
            if not unavailable(exc):
                raise
            raise ToolError(UNAVAILABLE_PROPOSAL if proposes else UNAVAILABLE) from None

    tool.__name__ = tool.__qualname__ = name  # the SDK titles the input schema after it
    tool.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {**{p.name: p.annotation for p in params}, "return": returns}
    return tool


def _parameters(model: type[Args]) -> list[inspect.Parameter]:
    return [_parameter(name, field) for name, field in model.model_fields.items()]


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """One argument as the model sees it: its base type, description, default and enum.

    An optional field, or a field with choices and a default, is advertised as nullable
    with default null (the domain applies the real default). String constraints are left
    to the domain; numeric ones (``expires_in_seconds > 0``) are advertised.
    """
    base, choices, nullable = _wire_type(field.annotation)
    optional = nullable or (choices is not None and not field.is_required())
    extra: dict[str, Any] = {}
    if choices is not None:
        extra["json_schema_extra"] = {"enum": [*choices, None] if optional else choices}
    constraints = list(field.metadata) if base in (int, float) else []
    annotation: Any = base | None if optional else base
    info = Field(description=field.description, **extra)
    if field.is_required():
        default: Any = inspect.Parameter.empty
    else:
        default = None if optional else field.default
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[(annotation, *constraints, info)])


def _wire_type(annotation: Any) -> tuple[type, list[Any] | None, bool]:
    """(base type, enum values or None, nullable) of a field's annotation."""
    arms: tuple[Any, ...] = (annotation,)
    if get_origin(annotation) in (Union, pytypes.UnionType):
        arms = get_args(annotation)
    nullable = type(None) in arms
    [arm] = [a for a in arms if a is not type(None)]
    if get_origin(arm) is Annotated:
        arm = get_args(arm)[0]
    if get_origin(arm) is Literal:
        return str, list(get_args(arm)), nullable
    if isinstance(arm, type) and issubclass(arm, enum.Enum):
        return str, [m.value for m in arm], nullable
    return arm, None, nullable


__all__ = ["PROPOSE", "READ", "build_server", "instructions", "json_result",
           "proposal_result"]
