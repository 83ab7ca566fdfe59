"""``GET /openapi.json``: OpenAPI 3.1 of every REST route, generated from the route table
(``rest/routes.py: ENDPOINTS``) and the pydantic models the handlers validate with
(``rest/schemas.py``). Nothing here is written by hand but the words."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from colaflow_mcp import __version__
from colaflow_mcp.rest.schemas import Error

PATH = "/openapi.json"
REF = "#/components/schemas/{model}"

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An agent's API key (cola_…, from `colaflow-mcp keys create`)."},
    "agentBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "cola_ API key",
                    "description": "An agent's API key as `Authorization: Bearer cola_…`."},
    "reviewerBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "A reviewer token (`colaflow-mcp token`), signed "
                                      "with COLAFLOW_JWT_SECRET."},
    "metricsBearer": {"type": "http", "scheme": "bearer",
                      "description": "COLAFLOW_METRICS_TOKEN, when it is set."},
}
_SCHEMES_OF = {"agent": ("apiKey", "agentBearer"), "reviewer": ("reviewerBearer",),
               "metrics": ("metricsBearer",)}
_ERROR_TEXT = {400: "Invalid input: the message names what to fix.",
               401: "Missing or invalid credentials.",
               403: "The caller's role may not do this.",
               404: "Not found (a change of another tenant looks the same).",
               409: "No longer pending: currentStatus says what it is.",
               413: "Body over the size limit.", 503: "Not ready."}
_UNAVAILABLE_TEXT = ('The database does not answer ("unavailable"): try again after '
                     "Retry-After. A proposal may have been recorded all the same.")


@dataclass(frozen=True)
class Endpoint:
    """One route and what the document says of it."""

    method: str
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: tuple[str, ...] | None = None  # "agent", "reviewer", "metrics"; None: anyone
    errors: tuple[int, ...] = ()
    # A response that is not JSON (media type, description), instead of ``response``.
    raw: tuple[str, str] | None = None
    # A 503 with the same body as the 200 (health checks).
    unavailable: bool = False


def document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``."""
    models: list[tuple[type[BaseModel], Any]] = [(Error, "serialization")]
    for e in endpoints:
        if e.body is not None:
            models.append((e.body, "validation"))
        if e.response is not None:
            models.append((e.response, "serialization"))
    _, defs = models_json_schema(models, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {"title": "colaflow-mcp", "version": __version__,
                 "description": "Agents propose changes, reviewers decide them. The same "
                                "changes are served over MCP (/mcp) and the SignalR hub "
                                "(/hubs/mcp), which this document does not describe."},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}),
                       "securitySchemes": SECURITY_SCHEMES},
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(e: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": e.handler.__name__, "summary": e.summary,
                          "description": (e.handler.__doc__ or "").strip()}
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)}", e.path)]
    if e.query is not None:
        schema = e.query.model_json_schema(ref_template=REF)
        for name, prop in schema["properties"].items():
            prop = dict(prop)
            prop.pop("title", None)
            description = prop.pop("description", None)
            param: dict[str, Any] = {"name": name, "in": "query", "required": False,
                                     "schema": _not_null(_inline(prop,
                                                                 schema.get("$defs", {})))}
            if description:
                param["description"] = description
            parameters.append(param)
    if parameters:
        op["parameters"] = parameters
    if e.body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": _ref(e.body)}}}
    responses: dict[str, Any] = {}
    if e.raw is not None:
        media, text = e.raw
        responses[str(e.status)] = {"description": text,
                                    "content": {media: {"schema": {"type": "string"}}}}
    elif e.response is not None:
        content = {"application/json": {"schema": _ref(e.response)}}
        responses[str(e.status)] = {"description": "OK", "content": content}
        if e.unavailable:
            responses["503"] = {"description": _ERROR_TEXT[503], "content": content}
    for code in e.errors:
        responses[str(code)] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": _ref(Error)}}}
        if code == 503:  # an error body, not the health check's: the database is away
            responses["503"]["description"] = _UNAVAILABLE_TEXT
            responses["503"]["headers"] = {"Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "string"}}}
    op["responses"] = responses
    if e.auth is not None:
        op["security"] = [{scheme: []} for who in e.auth for scheme in _SCHEMES_OF[who]]
    return op


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string: its schema without the ``null`` choice."""
    choices = [c for c in schema.get("anyOf", ()) if c != {"type": "null"}]
    if "anyOf" not in schema:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.get("default", ...) is None:
        del rest["default"]
    return {**choices[0], **rest} if len(choices) == 1 else {**rest, "anyOf": choices}


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema with its ``$ref``s to local definitions (enums) inlined."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        target = dict(defs[name])
        target.pop("title", None)
        return target
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, list):
            out[key] = [_inline(v, defs) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, dict):
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    return out
