"""The role matrix: every mutating tenant route x every kind of caller, against the code.

Principals: owner, admin, manager, member, viewer, billing (members of the org), a
non-member, an anonymous caller, an API key holding the route's permission and one
without it. The expectation comes from the route's `require(...)` (read back from the
OpenAPI document) and `core.permissions.ROLE_PERMISSIONS`, or from `routes.RULES` for
the few routes that check in the service. Allowed → 2xx; lacking permission → 403;
non-member → 404; anonymous → 401. Each call gets a fresh organization and objects.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tenantry.core.permissions import PERMISSIONS, Role, grants, role_permissions
from tests.factories import add_member, api_key_headers, create_api_key, create_org, register
from tests.orgs.routes import MUTATING, NOT_WALKED, Rule, TenantRoute, create_objects, tenant_routes

ROLES = [role.value for role in Role]
PRINCIPALS = [*ROLES, "non-member", "anonymous", "key-with", "key-without"]


def expected_status(rule: Rule, principal: str) -> str:
    if principal == "anonymous":
        return "401"
    if principal == "non-member":
        return "404"
    if principal == "key-with":
        return "2xx" if rule.keys_allowed else "403"
    if principal == "key-without":
        return "403"
    if rule.owner_only:
        return "2xx" if principal == Role.OWNER.value else "403"
    if rule.others_row:
        return "2xx" if rule.permission in role_permissions(principal) else "403"
    return "2xx" if grants(role_permissions(principal), rule.permission) else "403"


def other_permission(permission: str) -> str:
    return next(
        p for p in PERMISSIONS if p != permission and p.split(":")[0] != permission.split(":")[0]
    )


async def _headers_for(
    app: FastAPI, client: httpx.AsyncClient, route: TenantRoute, principal: str
) -> tuple[str, dict[str, str], dict[str, str]]:
    """A fresh organization, the objects the route needs, and the principal's headers."""
    org = await create_org(client, await register(client))
    ids = await create_objects(app, client, org, route)
    rule = route.effective_rule()
    if principal == Role.OWNER.value:
        headers = org.owner.headers
    elif principal in ROLES:
        headers = (await add_member(app, client, org, principal)).headers
    elif principal == "non-member":
        headers = (await register(client)).headers
    elif principal == "anonymous":
        headers = {}
    elif principal == "key-with":
        headers = api_key_headers(await create_api_key(client, org, [rule.permission]))
    else:
        headers = api_key_headers(
            await create_api_key(client, org, [other_permission(rule.permission)])
        )
    return org.id, ids, headers


def classify(status: int) -> str:
    return "2xx" if 200 <= status < 300 else str(status)


async def test_every_mutating_route_answers_every_principal_as_the_matrix_says(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    routes = [r for r in tenant_routes(app) if r.method in MUTATING and r.key not in NOT_WALKED]
    assert len(routes) >= 10
    mismatches = []
    cells = 0
    for route in routes:
        rule = route.effective_rule()
        for principal in PRINCIPALS:
            org_id, ids, headers = await _headers_for(app, client, route, principal)
            response = await client.request(
                route.method, route.url(org_id, ids), json=route.body(ids), headers=headers
            )
            want, got = expected_status(rule, principal), classify(response.status_code)
            if want != got:
                mismatches.append(
                    f"{route.method} {route.path} as {principal}: {got}, want {want} "
                    f"({response.text[:120]})"
                )
            cells += 1
    assert mismatches == []
    assert cells == len(routes) * len(PRINCIPALS)
    print(f"role matrix: {len(routes)} mutating routes x {len(PRINCIPALS)} principals = {cells}")


def test_the_expectation_follows_the_permission_table() -> None:
    rule = Rule("members:manage")
    assert [expected_status(rule, p) for p in PRINCIPALS] == [
        "2xx",
        "2xx",
        "403",
        "403",
        "403",
        "403",
        "404",
        "401",
        "2xx",
        "403",
    ]
    own = Rule("tasks:delete")
    assert expected_status(own, "member") == "2xx"  # tasks:delete:own passes `require`
