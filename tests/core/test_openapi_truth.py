"""The document and the server agree (issue 14, found by fuzzing): what one refuses, the
other says it refuses; what the document calls valid, the server accepts.

Each row sends a request the server refuses with 400 and checks that the document's own
schema for that request refuses it too (before the fixes, the schema accepted every one).
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI

from tests.factories import Account, create_org, register

PROJECTS = "/api/v1/orgs/{orgId}/projects"
PROJECT = "/api/v1/orgs/{orgId}/projects/{projectId}"
TASKS = "/api/v1/orgs/{orgId}/projects/{projectId}/tasks"
TASK = "/api/v1/orgs/{orgId}/projects/{projectId}/tasks/{taskId}"


def body_schema(document: dict[str, Any], path: str, method: str) -> jsonschema.Validator:
    content = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    root = {**content["schema"], "components": document["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def param_schema(document: dict[str, Any], path: str, method: str, name: str) -> Any:
    parameters = document["paths"][path][method]["parameters"]
    schema = next(p for p in parameters if p["name"] == name)["schema"]
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
async def world(client: httpx.AsyncClient) -> dict[str, Any]:
    owner = await register(client)
    org = await create_org(client, owner)
    project = await client.post(f"{org.path}/projects", json={"name": "P"}, headers=owner.headers)
    task = await client.post(
        f"{org.path}/projects/{project.json()['data']['id']}/tasks",
        json={"title": "T"},
        headers=owner.headers,
    )
    return {
        "owner": owner,
        "orgId": org.id,
        "projectId": project.json()["data"]["id"],
        "taskId": task.json()["data"]["id"],
    }


def url(template: str, world: dict[str, Any]) -> str:
    return template.format(**{k: v for k, v in world.items() if isinstance(v, str)})


BODY_CASES = [
    # null where the server refuses it (the schema offered `null`)
    ("patch", PROJECT, {"name": None}),
    ("patch", PROJECT, {"status": None}),
    ("patch", TASK, {"status": None}),
    ("patch", TASK, {"priority": None}),
    ("patch", TASK, {"title": None}),
    ("patch", "/api/v1/orgs/{orgId}/tasks/bulk", {"ids": ["{taskId}"], "changes": {}}),
    # NUL in any string
    ("post", PROJECTS, {"name": "a\x00b"}),
    ("post", "/api/v1/auth/refresh", {"refreshToken": "x\x00"}),
    # email domains the validator refuses (special-use names)
    ("post", "/api/v1/orgs/{orgId}/invitations", {"email": "a@x.test", "role": "member"}),
    ("post", "/api/v1/orgs/{orgId}/invitations", {"email": "a@HOST.LocalHost", "role": "member"}),
    ("post", "/api/v1/auth/password/forgot", {"email": "a@10.in-addr.arpa"}),
    # organization names with control characters
    ("post", "/api/v1/orgs", {"name": "Acme\nInc"}),
    # permission strings the service does not know
    ("post", "/api/v1/orgs/{orgId}/api-keys", {"name": "k", "permissions": ["nope:read"]}),
]


@pytest.mark.parametrize(("method", "path", "body"), BODY_CASES)
async def test_the_document_refuses_what_the_server_refuses(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    owner: Account = world["owner"]
    if "ids" in body:
        body = {**body, "ids": [world["taskId"]]}
    response = await client.request(method, url(path, world), json=body, headers=owner.headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] in {"validation_error", "invalid_email"}
    errors = list(body_schema(app.openapi(), path, method).iter_errors(body))
    assert errors, f"the document accepts {body!r}, which the server refuses"


async def test_the_documented_sort_fields_are_accepted_and_no_others(
    app: FastAPI, client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    owner: Account = world["owner"]
    document = app.openapi()
    for path, item in document["paths"].items():
        operation = item.get("get", {})
        names = {p["name"] for p in operation.get("parameters", [])}
        if "sortBy" not in names or "{orgId}" not in path:
            continue
        allowed = param_schema(document, path, "get", "sortBy").schema["enum"]
        for field in allowed:
            answer = await client.get(
                url(path, world), params={"sortBy": field}, headers=owner.headers
            )
            assert answer.status_code == 200, (path, field, answer.text)
        refused = await client.get(
            url(path, world), params={"sortBy": "password"}, headers=owner.headers
        )
        assert refused.status_code == 400, path
        assert list(param_schema(document, path, "get", "sortBy").iter_errors("password"))


async def test_an_idempotency_key_the_server_refuses_is_refused_by_the_document(
    app: FastAPI, client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    owner: Account = world["owner"]
    key = "has space"
    response = await client.post(
        url(PROJECTS, world),
        json={"name": "P"},
        headers={**owner.headers, "Idempotency-Key": key},
    )
    assert response.status_code == 400
    validator = param_schema(app.openapi(), PROJECTS, "post", "Idempotency-Key")
    assert list(validator.iter_errors(key))
    assert not list(validator.iter_errors("c0ffee-1"))


async def test_405_allow_names_every_method_of_the_path(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    owner: Account = world["owner"]
    response = await client.put(url(PROJECT, world), json={}, headers=owner.headers)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    listing = await client.delete(url(PROJECTS, world), headers=owner.headers)
    assert listing.headers["allow"] == "GET, POST"


async def test_transferring_ownership_to_oneself_is_a_documented_409(
    app: FastAPI, client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    owner: Account = world["owner"]
    path = "/api/v1/orgs/{orgId}/transfer-ownership"
    response = await client.post(url(path, world), json={"userId": owner.id}, headers=owner.headers)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "conflict"
    codes = app.openapi()["paths"][path]["post"]["responses"]["409"]["x-error-codes"]
    assert "conflict" in codes


async def test_a_download_answers_with_a_documented_content_type(
    app: FastAPI, client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    owner: Account = world["owner"]
    files = url("/api/v1/orgs/{orgId}/files", world)
    uploaded = await client.post(
        files, files={"file": ("a.txt", b"hello", "text/plain")}, headers=owner.headers
    )
    assert uploaded.status_code == 201, uploaded.text
    download = await client.get(
        f"{files}/{uploaded.json()['data']['id']}/download", headers=owner.headers
    )
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/plain")
    documented = app.openapi()["paths"]["/api/v1/orgs/{orgId}/files/{fileId}/download"]["get"]
    content = documented["responses"]["200"]["content"]
    assert list(content) == ["*/*"]  # the type detected at upload, whatever it is
    assert content["*/*"]["schema"] == {"type": "string", "format": "binary"}
