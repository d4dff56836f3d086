"""OpenAPI: the machine contract clients are generated from (API.md, "/openapi.json").

`finalize_openapi` completes FastAPI's document from the routes themselves, so a route
added anywhere is documented the same way (and tests/core/test_openapi_contract.py walks
the result and fails on any operation missing a piece):

- `operationId` `<tag>_<action>` (`projects_list`, `auth_login`): the tag in camelCase,
  the endpoint function's name without the tag's noun (`list_projects` → `list`);
  an explicit `operation_id=` on the route wins.
- `summary`: the first line of the endpoint's docstring.
- `security`: what the route's dependencies accept. A dependency declares it with
  `declare(dep, security=...)` (the tenant gate: `bearerAuth` or `apiKeyHeader`); FastAPI's
  own security dependencies (`HTTPBearer(scheme_name="bearerAuth")`) are kept; a route
  with neither is public (`[]`).
- every error status with the error envelope and its `code`s (`x-error-codes`), from rules
  (parameters → 400, a body → 408/413/415, credentials → 401, other path ids → 404,
  `If-Match` → 412) and from what dependencies declare (`openapi_facts`: `require(...)` →
  403, `limit(...)` → 402, rate limits → 429) or routes add (`responses=errors({...})`).
- headers: `ETag` (where `If-Match` applies, and on the reads of those resources),
  `Retry-After` (429, 503), `WWW-Authenticate` (401), `X-Request-Id` (every answer).
- request body examples lifted from the request model's `examples`.
- named schemas: `ProjectEnvelope`, `ProjectPage`, `ProjectCursorPage`, `ErrorEnvelope`,
  `ErrorCode` (every code the document names), instead of pydantic's `Page_ProjectOut_`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, TypeVar

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import BaseRoute

SCHEMA_REF = "#/components/schemas/"
ERROR_SCHEMA = "ErrorEnvelope"
ERROR_CODE_SCHEMA = "ErrorCode"
BEARER = "bearerAuth"
API_KEY_HEADER = "apiKeyHeader"
TENANT_SECURITY = (BEARER, API_KEY_HEADER)
FACTS_ATTRIBUTE = "openapi_facts"
ERROR_CODES_EXTENSION = "x-error-codes"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT access token, or a `tnt_` API key",
        "description": "`Authorization: Bearer <accessToken from /auth/login>`; API keys "
        "(`tnt_…`) work too, on their own organization's routes",
    },
    API_KEY_HEADER: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An organization API key (`tnt_…`), on that organization's routes",
    },
}

# The codes each status answers with unless a route says more (API.md, status codes).
DEFAULT_CODES: dict[int, tuple[str, ...]] = {
    400: ("validation_error",),
    401: ("unauthorized", "token_expired"),
    402: ("trial_expired", "plan_limit_reached", "feature_not_in_plan"),
    403: ("forbidden",),
    404: ("not_found",),
    408: ("request_timeout",),
    409: ("conflict",),
    412: ("precondition_failed",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    429: ("rate_limited",),
    500: ("internal_error",),
    503: ("service_unavailable",),
}
# Answered by the platform on any route (unknown route, wrong method): in the code union.
PLATFORM_CODES = ("not_found", "method_not_allowed", "bad_request", "internal_error")

HEADERS: dict[str, Any] = {
    "ETag": {
        "description": 'The resource\'s version, e.g. `"3"`: send it back as `If-Match`',
        "schema": {"type": "string"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWWAuthenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
    "XRequestId": {
        "description": "The request's id (echoed from the request, else generated)",
        "schema": {"type": "string"},
    },
    "IdempotentReplayed": {
        "description": "`true` when this is the stored answer to a repeated Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_HEADER_NAMES = {
    "ETag": "ETag",
    "RetryAfter": "Retry-After",
    "WWWAuthenticate": "WWW-Authenticate",
    "XRequestId": "X-Request-Id",
    "IdempotentReplayed": "Idempotent-Replayed",
}

# Tags whose operationId prefix is not simply their camelCase.
TAG_PREFIXES = {"platform administration": "admin"}


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorEnvelope(BaseModel):
    """The error envelope of API.md."""

    model_config = ConfigDict(populate_by_name=True)

    success: Literal[False] = False
    status_code: int = Field(alias="statusCode", examples=[404])
    error: str = Field(examples=["Not Found"])
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["Project not found"])
    details: list[ErrorDetail] | dict[str, Any] = Field(default_factory=list)
    path: str
    request_id: str | None = Field(alias="requestId")
    timestamp: str


@dataclass(frozen=True, slots=True)
class OpenAPIFacts:
    """What a dependency adds to the operations that use it."""

    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    # Only on writes (POST/PUT/PATCH/DELETE): e.g. an expired trial refuses writes only.
    write_errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    # Alternatives the caller may authenticate with (each a scheme name).
    security: tuple[str, ...] = ()


D = TypeVar("D", bound=Callable[..., Any])


def declare(
    dependency: D,
    *,
    errors: Mapping[int, Sequence[str]] | None = None,
    write_errors: Mapping[int, Sequence[str]] | None = None,
    security: Sequence[str] = (),
) -> D:
    """Attach OpenAPI facts to a dependency function (what it may answer, what it accepts)."""
    facts = OpenAPIFacts(
        errors={k: tuple(v) for k, v in (errors or {}).items()},
        write_errors={k: tuple(v) for k, v in (write_errors or {}).items()},
        security=tuple(security),
    )
    setattr(dependency, FACTS_ATTRIBUTE, facts)
    return dependency


def errors(codes: Mapping[int, Sequence[str]]) -> dict[int | str, dict[str, Any]]:
    """`responses=errors({409: ["conflict"]})`: statuses a route answers beyond the rules."""
    return {
        status: {
            "model": ErrorEnvelope,
            "description": HTTPStatus(status).phrase,
            ERROR_CODES_EXTENSION: list(found),
        }
        for status, found in codes.items()
    }


def etag_response(description: str = "OK") -> dict[int | str, dict[str, Any]]:
    """`responses=etag_response()`: the route's 200 carries an `ETag`."""
    return {200: {"description": description, "headers": {"ETag": HEADERS["ETag"]}}}


# --- the document ----------------------------------------------------------------------


def finalize_openapi(schema: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Complete FastAPI's document from the routes (see the module docstring)."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = dict(SECURITY_SCHEMES)
    components["headers"] = dict(HEADERS)
    paths: dict[str, Any] = schema.get("paths", {})
    etag_paths = _paths_with_if_match(paths)
    for route in iter_route_contexts(routes):
        original = route.original_route
        if not isinstance(original, APIRoute) or not original.include_in_schema:
            continue
        facts = _collect_facts(route.dependant)
        path = route.path_format or ""
        for method in sorted(route.methods or ()):
            operation = paths.get(path, {}).get(method.lower())
            if operation is None:
                continue
            operation.get("responses", {}).pop("422", None)
            _operation_id(operation, original)
            _summary(operation, original)
            _security(operation, facts)
            _errors(operation, path, method, facts, schemas)
            _headers(operation, path, method, etag_paths)
            _body_example(operation, schemas)
    _name_generic_schemas(schema)
    _error_code_union(schema)
    return schema


def _collect_facts(dependant: Dependant) -> list[OpenAPIFacts]:
    found: list[OpenAPIFacts] = []
    for call in _calls(dependant):
        facts = getattr(call, FACTS_ATTRIBUTE, None)
        if isinstance(facts, OpenAPIFacts) and facts not in found:
            found.append(facts)
    return found


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def operation_id_for(route: APIRoute) -> str:
    """`<tag>_<action>`: `list_projects` under tag `projects` → `projects_list`."""
    tag = str(route.tags[0]) if route.tags else "default"
    prefix = TAG_PREFIXES.get(tag) or _camel(tag)
    snake = re.sub(r"[^a-z0-9]+", "_", tag.lower()).strip("_")
    action = route.name
    for stem in sorted({snake, f"{snake}s", snake.removesuffix("s")}, key=len, reverse=True):
        if stem and action.endswith(f"_{stem}"):
            action = action[: -len(stem) - 1]
            break
    return f"{prefix}_{action}"


def _camel(text: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", text.strip())
    words = [w for w in words if w]
    if not words:
        return "default"
    return words[0].lower() + "".join(w[:1].upper() + w[1:].lower() for w in words[1:])


def _operation_id(operation: dict[str, Any], route: APIRoute) -> None:
    operation["operationId"] = route.operation_id or operation_id_for(route)


def _summary(operation: dict[str, Any], route: APIRoute) -> None:
    if route.summary:
        return
    description = (route.description or "").strip()
    if description:
        operation["summary"] = description.splitlines()[0].strip().rstrip(".")


def _security(operation: dict[str, Any], facts: list[OpenAPIFacts]) -> None:
    alternatives: list[dict[str, list[str]]] = list(operation.get("security", []))
    for fact in facts:
        for scheme in fact.security:
            if {scheme: []} not in alternatives:
                alternatives.append({scheme: []})
    operation["security"] = alternatives


def _errors(
    operation: dict[str, Any],
    path: str,
    method: str,
    facts: list[OpenAPIFacts],
    schemas: dict[str, Any],
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted: dict[int, list[str]] = {}

    def add(status: int, codes: Sequence[str] | None = None) -> None:
        bucket = wanted.setdefault(status, [])
        for code in codes if codes is not None else DEFAULT_CODES.get(status, ()):
            if code not in bucket:
                bucket.append(code)

    if not path.startswith("/api/"):
        return  # operations (health, metrics) are not enveloped: as their routes say
    for key, response in list(responses.items()):  # declared by the route: keep, complete
        if key.isdigit() and int(key) >= 400:
            add(int(key), response.get(ERROR_CODES_EXTENSION))
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody")
    if parameters or body:
        add(400)
    if body:
        add(408)
        add(413)
        add(415)
    if any(p.get("in") == "path" and p.get("name") != "orgId" for p in parameters):
        add(404)
    if any(p.get("in") == "header" and p.get("name") == "If-Match" for p in parameters):
        add(412)
        add(409, ["version_conflict"])
    if "version" in _body_properties(operation, schemas):
        add(409, ["version_conflict"])
    if any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in parameters):
        add(409, ["conflict"])
    add(500)
    add(503)
    if operation.get("security"):
        add(401)
    for fact in facts:
        for status, codes in fact.errors.items():
            add(status, codes)
        if method not in SAFE_METHODS:
            for status, codes in fact.write_errors.items():
                add(status, codes)
    for status in sorted(wanted):
        fallback = HTTPStatus(status).phrase.lower().replace(" ", "_")  # as core/errors.py
        responses[str(status)] = _error_response(status, wanted[status] or [fallback])
    operation["responses"] = dict(sorted(responses.items()))


def _body_properties(operation: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    ref = str(schema.get("$ref", ""))
    target = schemas.get(ref.removeprefix(SCHEMA_REF), {}) if ref else schema
    properties = target.get("properties", {})
    return properties if isinstance(properties, dict) else {}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{HTTPStatus(status).phrase}: " + ", ".join(f"`{c}`" for c in codes),
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF + ERROR_SCHEMA}}},
        ERROR_CODES_EXTENSION: codes,
    }
    headers: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
    if status in (429, 503):
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    if headers:
        response["headers"] = headers
    return response


def _paths_with_if_match(paths: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for path, item in paths.items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == "If-Match":
                    found.add(path)
    return found


def _headers(operation: dict[str, Any], path: str, method: str, etag_paths: set[str]) -> None:
    parameters = operation.get("parameters", [])
    takes_if_match = any(p.get("name") == "If-Match" for p in parameters)
    takes_idempotency = any(p.get("name") == "Idempotency-Key" for p in parameters)
    restore = method == "POST" and path.endswith("/restore") and path[: -len("/restore")]
    for status, response in operation.get("responses", {}).items():
        headers = response.setdefault("headers", {})
        if path.startswith("/api/"):
            headers.setdefault("X-Request-Id", {"$ref": "#/components/headers/XRequestId"})
        if not status.startswith("2"):
            continue
        if takes_if_match or (
            (method == "GET" and path in etag_paths) or (restore and restore in etag_paths)
        ):
            headers.setdefault("ETag", {"$ref": "#/components/headers/ETag"})
        elif "ETag" in headers and "$ref" not in headers["ETag"]:
            headers["ETag"] = {"$ref": "#/components/headers/ETag"}
        if takes_idempotency:
            headers.setdefault(
                "Idempotent-Replayed", {"$ref": "#/components/headers/IdempotentReplayed"}
            )
        if not headers:
            response.pop("headers")


def _body_example(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        if "example" in media or "examples" in media:
            continue
        schema = media.get("schema", {})
        ref = str(schema.get("$ref", ""))
        target = schemas.get(ref.removeprefix(SCHEMA_REF), {}) if ref else schema
        examples = target.get("examples")
        if isinstance(examples, list) and examples:
            media["example"] = examples[0]


def _name_generic_schemas(schema: dict[str, Any]) -> None:
    """`Envelope_ProjectOut_` → `ProjectEnvelope` (the model's own name, its title)."""
    schemas: dict[str, Any] = schema["components"]["schemas"]
    renames: dict[str, str] = {}
    for key, body in schemas.items():
        title = body.get("title") if isinstance(body, dict) else None
        if (
            isinstance(title, str)
            and title != key
            and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", title)
            and title not in schemas
            and title not in renames.values()
            and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key)
        ):
            renames[key] = title
    if not renames:
        return
    schema["components"]["schemas"] = {renames.get(k, k): v for k, v in schemas.items()}
    refs = {SCHEMA_REF + old: SCHEMA_REF + new for old, new in renames.items()}

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref in refs:
                node["$ref"] = refs[ref]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    rewrite(schema)


def _error_code_union(schema: dict[str, Any]) -> None:
    """`ErrorCode`: every `code` the document names; `ErrorEnvelope.code` is one of them."""
    codes: set[str] = set(PLATFORM_CODES) | set(_app_error_codes())
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                codes.update(response.get(ERROR_CODES_EXTENSION, ()))
    schemas = schema["components"]["schemas"]
    schemas[ERROR_CODE_SCHEMA] = {
        "type": "string",
        "enum": sorted(codes),
        "title": ERROR_CODE_SCHEMA,
        "description": "Every error `code` this API answers with (API.md, status codes)",
    }
    envelope = schemas.get(ERROR_SCHEMA)
    if envelope is not None:
        envelope["properties"]["code"] = {"$ref": SCHEMA_REF + ERROR_CODE_SCHEMA}


def _app_error_codes() -> Iterator[str]:
    from tenantry.core.errors import AppError

    stack: list[type[AppError]] = [AppError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        code = getattr(cls, "code", None)
        if isinstance(code, str):
            yield code
