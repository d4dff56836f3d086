"""What the OpenAPI-walking tests (isolation, role matrix) need to exercise a tenant route.

Every route under `/orgs/{orgId}/` is found in the OpenAPI document; to call it the tests
need, for each other path parameter, a way to create such an object in an organization
(`OBJECTS`) and, for a route with a JSON body, a valid body (`BODIES`). A new route whose
parameter or body is missing here makes both tests fail: add an entry (or, only when the
walker truly cannot exercise a route, list it in `NOT_WALKED` with the reason).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from tests.factories import Org, add_member, create_api_key, create_org_job, unique_email

# (app, client, organization, the objects created so far for this call) → a new object's id
ObjectFactory = Callable[[FastAPI, httpx.AsyncClient, Org, dict[str, str]], Awaitable[str]]
BodyFactory = Callable[[dict[str, str]], dict[str, Any]]
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _member(app: FastAPI, client: httpx.AsyncClient, org: Org, _ids: dict[str, str]) -> str:
    return (await add_member(app, client, org, "member")).id


async def _invitation(
    _app: FastAPI, client: httpx.AsyncClient, org: Org, _ids: dict[str, str]
) -> str:
    response = await client.post(
        f"{org.path}/invitations",
        json={"email": unique_email("walk"), "role": "viewer"},
        headers=org.owner.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _api_key(_app: FastAPI, client: httpx.AsyncClient, org: Org, _ids: dict[str, str]) -> str:
    key = await create_api_key(client, org, ["org:read"])
    listed = await client.get(f"{org.path}/api-keys?limit=100", headers=org.owner.headers)
    return str(next(k["id"] for k in listed.json()["data"] if key.startswith(k["prefix"])))


async def _job(app: FastAPI, _client: httpx.AsyncClient, org: Org, _ids: dict[str, str]) -> str:
    return await create_org_job(app, org)


async def _project(_app: FastAPI, client: httpx.AsyncClient, org: Org, _ids: dict[str, str]) -> str:
    response = await client.post(
        f"{org.path}/projects", json={"name": "walked"}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _task(app: FastAPI, client: httpx.AsyncClient, org: Org, ids: dict[str, str]) -> str:
    if "projectId" not in ids:  # the task's project, whichever parameter comes first
        ids["projectId"] = await _project(app, client, org, ids)
    project = ids["projectId"]
    response = await client.post(
        f"{org.path}/projects/{project}/tasks", json={"title": "walked"}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _deleted_project(
    app: FastAPI, client: httpx.AsyncClient, org: Org, ids: dict[str, str]
) -> str:
    project = await _project(app, client, org, ids)
    response = await client.delete(f"{org.path}/projects/{project}", headers=org.owner.headers)
    assert response.status_code == 204, response.text
    return project


async def _deleted_task(
    app: FastAPI, client: httpx.AsyncClient, org: Org, ids: dict[str, str]
) -> str:
    task = await _task(app, client, org, ids)
    url = f"{org.path}/projects/{ids['projectId']}/tasks/{task}"
    response = await client.delete(url, headers=org.owner.headers)
    assert response.status_code == 204, response.text
    return task


SAMPLE_PNG = b"\x89PNG\r\n\x1a\n" + b"walker" * 20


async def _file(_app: FastAPI, client: httpx.AsyncClient, org: Org, _ids: dict[str, str]) -> str:
    response = await client.post(
        f"{org.path}/files",
        files={"file": ("walker.png", SAMPLE_PNG, "image/png")},
        headers=org.owner.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


# Path parameter → how to create one such object in an organization (returns its id).
OBJECTS: dict[str, ObjectFactory] = {
    "userId": _member,
    "invitationId": _invitation,
    "keyId": _api_key,
    "jobId": _job,
    "projectId": _project,
    "taskId": _task,
    "fileId": _file,
}

_PROJECT = "/api/v1/orgs/{orgId}/projects/{projectId}"
_TASK = _PROJECT + "/tasks/{taskId}"

# (method, path) → factories that replace OBJECTS' for that route (restore needs the trash).
ROUTE_OBJECTS: dict[tuple[str, str], dict[str, ObjectFactory]] = {
    ("POST", _PROJECT + "/restore"): {"projectId": _deleted_project},
    ("POST", _TASK + "/restore"): {"taskId": _deleted_task},
}

# (method, path) → a valid JSON body; `ids` holds the objects created for the call and,
# under "userId", a member of the organization that is not the caller.
BODIES: dict[tuple[str, str], BodyFactory] = {
    ("PATCH", "/api/v1/orgs/{orgId}"): lambda ids: {"name": "Renamed by the walker"},
    ("PATCH", "/api/v1/orgs/{orgId}/members/{userId}"): lambda ids: {"role": "viewer"},
    ("POST", "/api/v1/orgs/{orgId}/transfer-ownership"): lambda ids: {"userId": ids["userId"]},
    ("POST", "/api/v1/orgs/{orgId}/invitations"): lambda ids: {
        "email": unique_email("walk"),
        "role": "viewer",
    },
    ("POST", "/api/v1/orgs/{orgId}/api-keys"): lambda ids: {
        "name": "walker",
        "permissions": ["org:read"],
    },
    ("POST", "/api/v1/orgs/{orgId}/projects"): lambda ids: {"name": "walker"},
    ("PATCH", _PROJECT): lambda ids: {"name": "walked again"},
    ("POST", _PROJECT + "/tasks"): lambda ids: {"title": "walker"},
    ("PATCH", _TASK): lambda ids: {"title": "walked again"},
    ("PATCH", "/api/v1/orgs/{orgId}/tasks/bulk"): lambda ids: {
        "ids": [ids["taskId"]],
        "changes": {"priority": "low"},
    },
    ("POST", "/api/v1/orgs/{orgId}/exports"): lambda ids: {"format": "json"},
}

# (method, path) → the multipart files of an upload route (sent instead of a JSON body).
UPLOADS: dict[tuple[str, str], Callable[[dict[str, str]], dict[str, Any]]] = {
    ("POST", "/api/v1/orgs/{orgId}/files"): lambda ids: {
        "file": ("walker.png", SAMPLE_PNG, "image/png")
    },
}

# (method, path) → objects its body refers to (created like path parameters).
BODY_OBJECTS: dict[tuple[str, str], list[str]] = {
    ("POST", "/api/v1/orgs/{orgId}/transfer-ownership"): ["userId"],
    ("PATCH", "/api/v1/orgs/{orgId}/tasks/bulk"): ["taskId"],
}

# Resources made by `tenantry new-resource`: each has tests/<name>/walker.py with its
# OBJECTS, ROUTE_OBJECTS and BODIES, merged into the tables above.
GENERATED_RESOURCES: tuple[str, ...] = (
    # new-resource: walker (the generator adds a line above this one)
)
for _resource in GENERATED_RESOURCES:
    _walker = importlib.import_module(f"tests.{_resource}.walker")
    OBJECTS.update(_walker.OBJECTS)
    ROUTE_OBJECTS.update(_walker.ROUTE_OBJECTS)
    BODIES.update(_walker.BODIES)

ADMIN_PREFIX = "/api/v1/admin/"

# (method, path) → why the walker cannot call it. Keep this empty if at all possible.
NOT_WALKED: dict[tuple[str, str], str] = {}

# Endless responses: walked where they answer at once (another organization's path → 404),
# not read as lists (their rows are events: tests/events/ checks them across tenants).
STREAMS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/orgs/{orgId}/events"): "tests/events/test_events.py, cross-tenant",
}


@dataclass(frozen=True)
class Rule:
    """Who may call a mutating route, when more than its `require(...)` says."""

    permission: str
    owner_only: bool = False  # a check on the role in the service (transfer ownership)
    keys_allowed: bool = True
    # The object was created by the owner: a caller holding only `permission:own` is refused.
    others_row: bool = False


# Routes whose check lives in the service (documented in their docstrings).
RULES: dict[tuple[str, str], Rule] = {
    ("DELETE", "/api/v1/orgs/{orgId}/members/{userId}"): Rule("members:manage"),
    ("POST", "/api/v1/orgs/{orgId}/transfer-ownership"): Rule(
        "org:delete", owner_only=True, keys_allowed=False
    ),
    ("POST", "/api/v1/orgs/{orgId}/api-keys"): Rule("api_keys:manage", keys_allowed=False),
    ("DELETE", _TASK): Rule("tasks:delete", others_row=True),
    ("POST", _TASK + "/restore"): Rule("tasks:delete", others_row=True),
    ("DELETE", "/api/v1/orgs/{orgId}/files/{fileId}"): Rule("files:delete", others_row=True),
    # A test job (no starting permission): only `jobs:cancel` cancels it.
    ("POST", "/api/v1/orgs/{orgId}/jobs/{jobId}/cancel"): Rule("jobs:cancel"),
}


@dataclass
class TenantRoute:
    method: str
    path: str
    params: list[str]
    permissions: list[str]
    has_body: bool
    rule: Rule | None = field(default=None)
    query: tuple[str, ...] = ()

    @property
    def list_suffix(self) -> str:
        """`?limit=100` for a paged list (a route without `limit` rejects unknown ones)."""
        return "?limit=100" if "limit" in self.query else ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def object_params(self) -> list[str]:
        return [p for p in self.params if p != "orgId"]

    def url(self, org_id: str, ids: dict[str, str]) -> str:
        url = self.path.replace("{orgId}", org_id)
        for name in self.object_params:
            url = url.replace("{" + name + "}", ids[name])
        return url

    def body(self, ids: dict[str, str]) -> dict[str, Any] | None:
        if not self.has_body or self.key in UPLOADS:
            return None
        return BODIES[self.key](ids)

    def request_kwargs(self, ids: dict[str, str]) -> dict[str, Any]:
        """`json=` the sample body, or `files=` for an upload route."""
        if self.key in UPLOADS:
            return {"files": UPLOADS[self.key](ids)}
        return {"json": self.body(ids)}

    def effective_rule(self) -> Rule:
        if self.rule is not None:
            return self.rule
        assert self.permissions, f"{self.method} {self.path} declares no permission"
        return Rule(self.permissions[0])


def tenant_routes(app: FastAPI) -> list[TenantRoute]:
    """Every operation of the OpenAPI document whose path has `{orgId}`, except the
    platform admin's (`/admin/orgs/{orgId}/...`: no tenant gate, platform admins only —
    tests/tenants/test_operations.py checks an organization's owner gets 403)."""
    routes = []
    for path, operations in sorted(app.openapi()["paths"].items()):
        if "{orgId}" not in path or path.startswith(ADMIN_PREFIX):
            continue
        for method, operation in sorted(operations.items()):
            params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            routes.append(
                TenantRoute(
                    method=method.upper(),
                    path=path,
                    params=params,
                    permissions=list(operation.get("x-permissions", [])),
                    has_body="requestBody" in operation,
                    rule=RULES.get((method.upper(), path)),
                    query=tuple(
                        p["name"] for p in operation.get("parameters", []) if p["in"] == "query"
                    ),
                )
            )
    return routes


def missing_support(route: TenantRoute) -> list[str]:
    """Why the walker could not exercise `route` (empty when it can)."""
    if route.key in NOT_WALKED:
        return []
    problems = [
        f"{route.method} {route.path}: no object factory for path parameter {{{name}}}"
        for name in route.object_params
        if name not in OBJECTS
    ]
    if route.has_body and route.key not in BODIES and route.key not in UPLOADS:
        problems.append(f"{route.method} {route.path}: no sample body in BODIES")
    return problems


async def create_objects(
    app: FastAPI, client: httpx.AsyncClient, org: Org, route: TenantRoute
) -> dict[str, str]:
    factories = {**OBJECTS, **ROUTE_OBJECTS.get(route.key, {})}
    ids: dict[str, str] = {}
    for name in [*route.object_params, *BODY_OBJECTS.get(route.key, [])]:
        if name not in ids:  # a factory may create what its object needs (a task's project)
            ids[name] = await factories[name](app, client, org, ids)
    return ids


def random_ids(route: TenantRoute) -> dict[str, str]:
    return {name: str(uuid.uuid4()) for name in route.object_params}


def comparable(response: httpx.Response) -> dict[str, Any]:
    body = dict(response.json())
    for varying in ("path", "requestId", "timestamp"):
        body.pop(varying, None)
    return body
