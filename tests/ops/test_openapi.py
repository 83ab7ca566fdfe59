"""``/openapi.json`` describes every REST route, with the schemas of the models the handlers
validate with; real answers of every kind match it."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Route

from colaflow_mcp.rest.schemas import ApproveRequest, Change, ProposeRequest, RejectRequest
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def document(h: Harness) -> dict[str, Any]:
    r = await h.client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc: dict[str, Any] = r.json()
    return doc


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` refs resolve in ``doc``."""
    return Draft202012Validator({"components": doc["components"], **schema})


def response_schema(doc: dict[str, Any], path: str, method: str, status: int
                    ) -> dict[str, Any]:
    schema: dict[str, Any] = doc["paths"][path][method]["responses"][str(status)][
        "content"]["application/json"]["schema"]
    return schema


async def test_every_rest_route_is_in_the_document(app_harness: Harness) -> None:
    doc = await document(app_harness)
    assert doc["openapi"].startswith("3.1")
    served = {(route.path, method.lower()) for route in app_harness.app.routes
              if isinstance(route, Route) and route.methods
              for method in route.methods - {"HEAD"}}
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert described == served - {("/openapi.json", "get")}
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header",
                                 "name": "X-API-Key"}
    assert schemes["reviewerBearer"]["bearerFormat"] == "JWT"
    approve = doc["paths"]["/api/mcp/pending-changes/{id}/approve"]["post"]
    assert approve["security"] == [{"reviewerBearer": []}]
    assert {"409", "404", "403", "400", "200"} <= set(approve["responses"])


async def test_request_schemas_are_the_handlers_models(app_harness: Harness) -> None:
    doc = await document(app_harness)
    schemas = doc["components"]["schemas"]
    models = [(ProposeRequest, "validation"), (ApproveRequest, "validation"),
              (RejectRequest, "validation"), (Change, "serialization")]
    for model, mode in models:
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}",
                                            mode=mode)  # type: ignore[arg-type]
        generated.pop("$defs", None)
        assert schemas[model.__name__] == generated, model.__name__
    body = doc["paths"]["/api/mcp/pending-changes/{id}/reject"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RejectRequest"}
    assert schemas["RejectRequest"]["required"] == ["reason"]


async def test_answers_of_every_kind_match_the_document(harness: Harness) -> None:
    h = harness
    doc = await document(h)
    key, token = await h.agent_key(), await h.reviewer_token()
    agent, reviewer = ({"Authorization": f"Bearer {key}"},
                       {"Authorization": f"Bearer {token}"})
    await h.project()
    ids = [(await h.propose(key, arguments={"project_key": "WEB", "title": f"T{i}"}))["id"]
           for i in range(4)]
    assert (await h.approve(token, ids[0])).status_code == 200
    assert (await h.reject(token, ids[1], "no")).status_code == 200
    edited = await h.client.post(f"/api/mcp/pending-changes/{ids[2]}/approve",
                                 headers=reviewer, json={"arguments": {
                                     "project_key": "WEB", "title": "Edited"}})
    assert edited.status_code == 200 and edited.json()["edited"] is True
    failing = (await h.propose(key, "update_issue", {"issue_key": "WEB-1", "title": "X"}))
    deleted = (await h.propose(key, "delete_issue", {"issue_key": "WEB-1"}))
    assert (await h.approve(token, deleted["id"])).status_code == 200
    failed = await h.approve(token, failing["id"])  # the issue is gone: execution fails
    assert failed.json()["executionResult"]["success"] is False
    answers: list[tuple[str, str, int, Any]] = [
        ("/api/mcp/pending-changes", "get", 200,
         await h.client.get("/api/mcp/pending-changes?pageSize=100", headers=reviewer)),
        ("/api/mcp/pending-changes/{id}", "get", 200,
         await h.client.get(f"/api/mcp/pending-changes/{ids[3]}", headers=agent)),
        ("/api/mcp/pending-changes/{id}/approve", "post", 200, failed),
        ("/api/mcp/pending-changes/{id}/approve", "post", 200, edited),
        ("/api/mcp/pending-changes/{id}/approve", "post", 409,
         await h.approve(token, ids[1])),
        ("/api/mcp/pending-changes/{id}/reject", "post", 400,
         await h.reject(token, ids[3], None)),
        ("/api/audit", "get", 200, await h.client.get("/api/audit", headers=reviewer)),
        ("/api/projects", "get", 200, await h.client.get("/api/projects", headers=agent)),
        ("/api/issues/{key}", "get", 404,
         await h.client.get("/api/issues/WEB-1", headers=agent)),
        ("/health", "get", 200, await h.client.get("/health")),
        ("/health/ready", "get", 200, await h.client.get("/health/ready")),
        ("/health/live", "get", 200, await h.client.get("/health/live")),
    ]
    for path, method, status, r in answers:
        assert r.status_code == status, (path, r.text)
        errors = list(validator(doc, response_schema(doc, path, method, status))
                      .iter_errors(r.json()))
        assert errors == [], (path, status, [e.message for e in errors])
    statuses = {c["status"] for c in answers[0][3].json()["items"]}
    assert statuses == {"Approved", "Rejected", "Pending"}
