"""Tenant isolation, walked from the OpenAPI document: every route under `/orgs/{orgId}/`.

For org A (with one object per path parameter) and org B:

- B's owner calling any route under A's path gets the same 404 as under a random org id;
- for routes with object ids, B's owner using A's ids under B's path gets the same 404
  as with random UUIDs, and A's objects are untouched (A still reads them);
- every list under B shows none of A's ids.

New routes are covered automatically; one the walker cannot call fails the test
(tests/orgs/routes.py says what to add).
"""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from tests.factories import Org, create_org, register
from tests.orgs.routes import (
    NOT_WALKED,
    STREAMS,
    TenantRoute,
    comparable,
    create_objects,
    missing_support,
    random_ids,
    tenant_routes,
)

COUNTS: dict[str, int] = {}


async def _call(
    client: httpx.AsyncClient,
    route: TenantRoute,
    org_id: str,
    ids: dict[str, str],
    headers: dict[str, str],
) -> httpx.Response:
    return await client.request(
        route.method, route.url(org_id, ids), headers=headers, **route.request_kwargs(ids)
    )


async def test_every_tenant_route_can_be_walked(app: FastAPI) -> None:
    routes = tenant_routes(app)
    assert len(routes) >= 15
    problems = [p for route in routes for p in missing_support(route)]
    assert problems == []
    stale = set(NOT_WALKED) - {r.key for r in routes}
    assert not stale, f"NOT_WALKED lists routes that no longer exist: {stale}"


async def _two_orgs(client: httpx.AsyncClient) -> tuple[Org, Org]:
    return await create_org(client, await register(client)), await create_org(
        client, await register(client)
    )


async def test_other_organizations_paths_answer_like_a_missing_organization(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    checked = 0
    for route in tenant_routes(app):
        if route.key in NOT_WALKED:
            continue
        a, b = await _two_orgs(client)
        ids = await create_objects(app, client, a, route)
        foreign = await _call(client, route, a.id, ids, b.owner.headers)
        missing = await _call(client, route, str(uuid.uuid4()), ids, b.owner.headers)
        assert foreign.status_code == 404, (route.key, foreign.text)
        assert comparable(foreign) == comparable(missing), route.key
        checked += 1
    COUNTS["foreign org path"] = checked
    print(f"isolation: {checked} tenant routes under another organization's path")
    assert checked >= 15


async def test_other_organizations_ids_under_my_path_answer_like_random_ids(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    checked = 0
    for route in tenant_routes(app):
        if route.key in NOT_WALKED or not route.object_params:
            continue
        a, b = await _two_orgs(client)
        ids = await create_objects(app, client, a, route)
        b_ids = await create_objects(app, client, b, route)  # B has such objects too
        body_ids = {**b_ids, **ids}
        foreign = await _call(client, route, b.id, body_ids, b.owner.headers)
        random = await _call(client, route, b.id, {**b_ids, **random_ids(route)}, b.owner.headers)
        assert foreign.status_code == 404, (route.key, foreign.text)
        assert comparable(foreign) == comparable(random), route.key
        # A's object is still there for A.
        for name in route.object_params:
            reader = _reader_for(name)
            if reader is not None:
                listed = await client.get(f"{a.path}/{reader}?limit=100", headers=a.owner.headers)
                assert ids[name] in listed.text, (route.key, name)
        checked += 1
    COUNTS["foreign ids under own path"] = checked
    print(f"isolation: {checked} routes with object ids, foreign ids under the own path")
    assert checked >= 5


def _reader_for(param: str) -> str | None:
    return {
        "userId": "members",
        "invitationId": "invitations",
        "keyId": "api-keys",
        "jobId": "jobs",
        "fileId": "files",
    }.get(param)


async def test_lists_under_my_organization_never_show_another_organizations_rows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    routes = tenant_routes(app)
    a, b = await _two_orgs(client)
    planted: set[str] = {a.id, a.owner.id}
    for route in routes:
        if route.key not in NOT_WALKED:
            planted.update((await create_objects(app, client, a, route)).values())
    checked = 0
    for route in routes:
        if route.method != "GET" or route.object_params or route.key in STREAMS:
            continue
        response = await client.get(
            route.url(b.id, {}) + route.list_suffix, headers=b.owner.headers
        )
        assert response.status_code == 200, (route.key, response.text)
        leaked = [value for value in planted if value in response.text]
        assert leaked == [], (route.key, leaked)
        checked += 1
    COUNTS["lists"] = checked
    print(f"isolation: {checked} list routes show no foreign rows")
    assert checked >= 5


def test_a_route_the_walker_cannot_call_is_reported() -> None:
    route = TenantRoute(
        method="POST",
        path="/api/v1/orgs/{orgId}/widgets/{widgetId}/polish",
        params=["orgId", "widgetId"],
        permissions=["projects:write"],
        has_body=True,
    )
    assert missing_support(route) == [
        "POST /api/v1/orgs/{orgId}/widgets/{widgetId}/polish: "
        "no object factory for path parameter {widgetId}",
        "POST /api/v1/orgs/{orgId}/widgets/{widgetId}/polish: no sample body in BODIES",
    ]
