"""The OpenAPI walker: every operation of /openapi.json is complete (API.md, "/openapi.json").

It walks the document the app serves — so routes added later (events, identity
providers...) are checked without touching this file — and fails on any operation
missing a stable operationId, a summary, its security, an error status it can answer
(with the error envelope and its codes), a request body example, the named envelope and
page schemas, or the ETag / If-Match / Idempotency-Key / Retry-After headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import jsonschema
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.responses import Response, StreamingResponse

from tenantry.core.authz import require
from tenantry.core.openapi import (
    ERROR_CODES_EXTENSION,
    SECURITY_SCHEMES,
    errors,
    operation_id_for,
)
from tenantry.core.routing import UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext

OPERATION_ID = re.compile(r"^[a-z][A-Za-z0-9]*_[a-z][a-z0-9_]*$")
ERROR_REF = "#/components/schemas/ErrorEnvelope"
WRITE_METHODS = {"post", "put", "patch", "delete"}

Operation = tuple[str, str, dict[str, Any]]


def operations(document: dict[str, Any]) -> Iterator[Operation]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def header_params(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p.get("in") == "header"}


def contract_problems(document: dict[str, Any]) -> list[str]:
    """Everything an operation lacks; empty when the document is complete."""
    problems: list[str] = []
    schemas = document.get("components", {}).get("schemas", {})
    schemes = document.get("components", {}).get("securitySchemes", {})
    for name, scheme in SECURITY_SCHEMES.items():
        if schemes.get(name) != scheme:
            problems.append(f"security scheme {name} is not declared")
    for name in ("ErrorEnvelope", "ErrorCode", "PageMeta", "CursorMeta"):
        if name not in schemas:
            problems.append(f"schema {name} is not named")
    code_union = set(schemas.get("ErrorCode", {}).get("enum", []))
    if schemas.get("ErrorEnvelope", {}).get("properties", {}).get("code") != {
        "$ref": "#/components/schemas/ErrorCode"
    }:
        problems.append("ErrorEnvelope.code is not the ErrorCode union")
    seen_ids: dict[str, str] = {}
    etag_paths = {path for path, _m, op in operations(document) if "If-Match" in header_params(op)}
    for path, method, op in operations(document):
        where = f"{method.upper()} {path}"
        api = path.startswith("/api/")
        responses: dict[str, Any] = op.get("responses", {})
        # operationId: `<tag>_<action>`, unique
        operation_id = op.get("operationId", "")
        if not OPERATION_ID.match(operation_id):
            problems.append(f"{where}: operationId {operation_id!r} is not <tag>_<action>")
        elif operation_id in seen_ids:
            problems.append(f"{where}: operationId {operation_id} also on {seen_ids[operation_id]}")
        seen_ids[operation_id] = where
        # summary: one line
        summary = op.get("summary", "")
        if not summary or "\n" in summary or len(summary) > 120:
            problems.append(f"{where}: no one-line summary")
        # security: declared; public is `[]`; tenant routes take a key too
        if "security" not in op:
            problems.append(f"{where}: no security requirement (public routes say [])")
        else:
            named = {name for requirement in op["security"] for name in requirement}
            if named - set(schemes):
                problems.append(f"{where}: security names undeclared {named - set(schemes)}")
            if "{orgId}" in path and named != {"bearerAuth", "apiKeyHeader"}:
                problems.append(f"{where}: a tenant route accepts bearerAuth and apiKeyHeader")
            if named and "401" not in responses:
                problems.append(f"{where}: authenticated but no 401")
        # errors: the envelope and its codes, for every status the route can answer
        needed: set[str] = set()
        if api:
            needed |= {"500", "503"}
            if op.get("parameters") or op.get("requestBody"):
                needed.add("400")
            if op.get("requestBody"):
                needed |= {"413", "415"}
            if any(p["in"] == "path" for p in op.get("parameters", [])):
                needed.add("404")
            if "{orgId}" in path:
                needed |= {"401", "404", "429"}
                if op.get("x-permissions"):
                    needed.add("403")
                if method in WRITE_METHODS:
                    needed.add("402")
            if "If-Match" in header_params(op):
                needed |= {"409", "412"}
        for status in sorted(needed - set(responses)):
            problems.append(f"{where}: does not document {status}")
        for status, response in responses.items():
            if not status.isdigit() or int(status) < 400 or not api:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") != ERROR_REF:
                problems.append(f"{where}: {status} is not the error envelope")
            codes = response.get(ERROR_CODES_EXTENSION) or []
            if not codes:
                problems.append(f"{where}: {status} names no error code")
            if set(codes) - code_union:
                problems.append(f"{where}: {status} codes outside ErrorCode: {codes}")
            headers = response.get("headers", {})
            if status in {"429", "503"} and "Retry-After" not in headers:
                problems.append(f"{where}: {status} without Retry-After")
            if status == "401" and "WWW-Authenticate" not in headers:
                problems.append(f"{where}: 401 without WWW-Authenticate")
        # list queries name their sort fields (anything else is a 400)
        for parameter in op.get("parameters", []):
            if parameter.get("name") == "sortBy" and not parameter.get("schema", {}).get("enum"):
                problems.append(f"{where}: sortBy is not an enum of the sortable fields")
        # request bodies carry an example, valid against their schema
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            if "example" not in media and "examples" not in media:
                problems.append(f"{where}: {media_type} body has no example")
            elif media_type == "application/json":
                problems.extend(f"{where}: {p}" for p in _invalid_example(document, media))
        # success bodies: named schemas, list answers as the two page shapes
        for status, response in responses.items():
            if not status.startswith("2"):
                continue
            if api and "X-Request-Id" not in response.get("headers", {}):
                problems.append(f"{where}: {status} does not declare X-Request-Id")
            json_schema = response.get("content", {}).get("application/json", {}).get("schema")
            if json_schema is None or not api:
                continue
            refs = [json_schema.get("$ref")] + [
                s.get("$ref") for s in json_schema.get("anyOf", json_schema.get("oneOf", []))
            ]
            names = {r.rsplit("/", 1)[-1] for r in refs if r}
            if not names:
                problems.append(f"{where}: {status} body is not a named schema")
            pages = {n for n in names if n.endswith("Page")}
            if pages and not any(not n.endswith("CursorPage") for n in pages):
                problems.append(f"{where}: a list without the offset page shape")
            if any(re.search(r"_[A-Za-z]+_$", n) for n in names):
                problems.append(f"{where}: generic schema names leak: {names}")
            # ETag where If-Match applies, and on the reads of those resources
            headers = response.get("headers", {})
            reads_etag_resource = method == "get" and path in etag_paths
            if ("If-Match" in header_params(op) or reads_etag_resource) and "ETag" not in headers:
                problems.append(f"{where}: {status} without ETag")
            if "Idempotency-Key" in header_params(op) and "Idempotent-Replayed" not in headers:
                problems.append(f"{where}: {status} without Idempotent-Replayed")
    return problems


def _invalid_example(document: dict[str, Any], media: dict[str, Any]) -> list[str]:
    # The body schema as a root that resolves `#/components/...` against the document.
    root = {**media["schema"], "components": document["components"]}
    validator = jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())
    return [f"example: {e.message}" for e in validator.iter_errors(media["example"])]


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def test_every_operation_is_complete(document: dict[str, Any]) -> None:
    assert contract_problems(document) == []


def test_operation_ids_are_tag_and_action(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for path, method, op in operations(document)}
    assert ids[("get", "/api/v1/orgs/{orgId}/projects")] == "projects_list"
    assert ids[("post", "/api/v1/orgs/{orgId}/projects/{projectId}/tasks")] == "tasks_create"
    assert ids[("post", "/api/v1/auth/login")] == "auth_login"
    assert ids[("post", "/api/v1/auth/mfa/enable")] == "auth_mfa_enable"
    assert ids[("get", "/api/v1/orgs/{orgId}/api-keys")] == "apiKeys_list"


def test_security_names_what_each_route_accepts(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert paths["/api/v1/auth/login"]["post"]["security"] == []
    assert paths["/health/live"]["get"]["security"] == []
    assert paths["/api/v1/users/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/v1/orgs/{orgId}/projects"]["get"]["security"] == [
        {"bearerAuth": []},
        {"apiKeyHeader": []},
    ]


def test_error_codes_are_the_contracts(document: dict[str, Any]) -> None:
    login = document["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert set(login["401"][ERROR_CODES_EXTENSION]) >= {"invalid_credentials", "mfa_required"}
    update = document["paths"]["/api/v1/orgs/{orgId}/projects/{projectId}"]["patch"]
    assert update["responses"]["412"][ERROR_CODES_EXTENSION] == ["precondition_failed"]
    assert "version_conflict" in update["responses"]["409"][ERROR_CODES_EXTENSION]
    assert "trial_expired" in update["responses"]["402"][ERROR_CODES_EXTENSION]
    create = document["paths"]["/api/v1/orgs/{orgId}/projects"]["post"]["responses"]
    assert "plan_limit_reached" in create["402"][ERROR_CODES_EXTENSION]


def test_list_answers_are_the_named_page_shapes(document: dict[str, Any]) -> None:
    listing = document["paths"]["/api/v1/orgs/{orgId}/projects"]["get"]["responses"]["200"]
    schema = listing["content"]["application/json"]["schema"]
    assert {s["$ref"] for s in schema["anyOf"]} == {
        "#/components/schemas/ProjectPage",
        "#/components/schemas/ProjectCursorPage",
    }


def test_sort_fields_are_enums(document: dict[str, Any]) -> None:
    params = document["paths"]["/api/v1/orgs/{orgId}/projects"]["get"]["parameters"]
    sort_by = next(p for p in params if p["name"] == "sortBy")
    assert sort_by["schema"]["enum"] == ["createdAt", "updatedAt", "name"]


def test_operation_ids_come_from_the_routes(app: FastAPI) -> None:
    routes = [
        c.original_route
        for c in iter_route_contexts(app.routes)
        if isinstance(c.original_route, APIRoute)
    ]
    assert {operation_id_for(r) for r in routes if r.name == "list_projects"} == {"projects_list"}


# --- the walker catches what it should (each check shown to fail) ---------------------


def _broken(document: dict[str, Any], mutate: Any) -> list[str]:
    import copy

    broken = copy.deepcopy(document)
    mutate(broken)
    return contract_problems(broken)


def _op(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


PROJECT = "/api/v1/orgs/{orgId}/projects/{projectId}"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _op(d, PROJECT, "get").pop("operationId"), "operationId"),
        (lambda d: _op(d, PROJECT, "get").update(operationId="x"), "operationId"),
        (lambda d: _op(d, PROJECT, "get").pop("summary"), "summary"),
        (lambda d: _op(d, PROJECT, "get").pop("security"), "no security"),
        (
            lambda d: _op(d, PROJECT, "get").update(security=[{"bearerAuth": []}]),
            "apiKeyHeader",
        ),
        (lambda d: _op(d, PROJECT, "get")["responses"].pop("404"), "does not document 404"),
        (lambda d: _op(d, PROJECT, "patch")["responses"].pop("412"), "does not document 412"),
        (lambda d: _op(d, PROJECT, "patch")["responses"].pop("402"), "does not document 402"),
        (
            lambda d: _op(d, PROJECT, "get")["responses"]["404"].pop(ERROR_CODES_EXTENSION),
            "names no error code",
        ),
        (
            lambda d: _op(d, PROJECT, "get")["responses"]["404"].update(content={}),
            "not the error envelope",
        ),
        (
            lambda d: _op(d, PROJECT, "get")["responses"]["429"].pop("headers"),
            "Retry-After",
        ),
        (lambda d: _op(d, PROJECT, "get")["responses"]["200"].pop("headers"), "ETag"),
        (
            lambda d: _op(d, PROJECT, "patch")["requestBody"]["content"]["application/json"].pop(
                "example"
            ),
            "no example",
        ),
        (
            lambda d: _op(d, PROJECT, "patch")["requestBody"]["content"]["application/json"].update(
                example={"name": 5}
            ),
            "example:",
        ),
        (
            lambda d: _op(d, "/api/v1/orgs/{orgId}/projects", "post")["responses"]["201"][
                "headers"
            ].pop("Idempotent-Replayed"),
            "Idempotent-Replayed",
        ),
        (lambda d: d["components"]["securitySchemes"].pop("apiKeyHeader"), "apiKeyHeader"),
        (
            lambda d: _op(d, "/api/v1/orgs/{orgId}/projects", "get")["parameters"][-1].update(
                name="sortBy", schema={"type": "string"}
            ),
            "sortBy is not an enum",
        ),
        (lambda d: d["components"]["schemas"].pop("ErrorCode"), "ErrorCode"),
    ],
)
def test_the_walker_fails_on_an_incomplete_operation(
    document: dict[str, Any], mutate: Any, expected: str
) -> None:
    problems = _broken(document, mutate)
    assert any(expected in problem for problem in problems), problems


async def test_a_route_added_later_is_documented_completely_without_openapi_code(
    build_app: Any,
) -> None:
    # What the events and identity-provider work will add: a tenant stream and a public
    # webhook, declared like any route (docstring, dependencies), no OpenAPI by hand.
    router = APIRouter(tags=["events"], route_class=UnitOfWorkRoute)
    providers = APIRouter(tags=["auth"], route_class=UnitOfWorkRoute)

    @router.get(
        "/orgs/{orgId}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def stream_events(
        _ctx: Annotated[TenantContext, Depends(require("audit:read"))],
    ) -> Response:
        """What happens in the organization, as Server-Sent Events."""
        return Response()

    @providers.post(
        "/auth/providers/{name}/webhook",
        status_code=204,
        response_class=Response,
        responses=errors({401: ["unauthorized"]}),
    )
    async def provider_webhook(name: str) -> None:
        """Receive an identity provider's signed user-lifecycle event."""

    app = await build_app()
    app.include_router(router, prefix="/api/v1")
    app.include_router(providers, prefix="/api/v1")
    app.openapi_schema = None
    document = app.openapi()
    assert contract_problems(document) == []
    events = document["paths"]["/api/v1/orgs/{orgId}/events"]["get"]
    assert events["operationId"] == "events_stream"
    assert events["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert {"401", "403", "404", "429"} <= set(events["responses"])
    webhook = document["paths"]["/api/v1/auth/providers/{name}/webhook"]["post"]
    assert webhook["operationId"] == "auth_provider_webhook"
    assert webhook["security"] == []
    assert webhook["responses"]["401"]["x-error-codes"] == ["unauthorized"]
