"""The dependency chain through HTTP: orgId → TenantContext (bound session) → require()."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.app import create_app
from tenantry.config import Settings
from tenantry.core.authz import TenantContextDep, authorize_row, require
from tenantry.core.errors import NotFound
from tenantry.core.permissions import role_permissions
from tenantry.core.responses import Envelope, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext, require_tenant
from tenantry.services import services_of
from tests.conftest import client_for

router = APIRouter(prefix="/api/v1/orgs/{orgId}/probe-authz", route_class=UnitOfWorkRoute)


@router.post("/projects")
async def write_project(
    ctx: Annotated[TenantContext, Depends(require("projects:write"))], session: SessionDep
) -> Envelope[dict[str, str]]:
    """Needs projects:write; answers with the organization the session is bound to."""
    bound = require_tenant(session)
    return ok({"organizationId": str(bound.organization_id), "role": ctx.role or ""})


@router.delete("/tasks/{createdBy}", status_code=204)
async def delete_task(
    createdBy: uuid.UUID,
    ctx: Annotated[TenantContext, Depends(require("tasks:delete"))],
) -> Response:
    authorize_row(ctx, "tasks:delete", created_by=createdBy)
    return Response(status_code=204)


@router.get("/whoami")
async def whoami(ctx: TenantContextDep) -> Envelope[str]:
    return ok(ctx.role or "")


audit_router = APIRouter(
    prefix="/api/v1/orgs/{orgId}/probe-audit",
    route_class=UnitOfWorkRoute,
    dependencies=[Depends(require("audit:read"))],
)


@audit_router.get("/entries")
async def list_entries() -> Envelope[list[str]]:
    return ok([])


async def header_resolver(
    request: Request, _session: AsyncSession, org_id: uuid.UUID
) -> TenantContext:
    """Test stand-in for the membership lookup: the role comes from a header."""
    provisional = require_tenant(_session)  # bound to the path's organization already
    assert (provisional.organization_id, provisional.permissions) == (org_id, frozenset())
    role = request.headers.get("x-probe-role")
    if role is None:
        raise NotFound("Organization not found")
    return TenantContext(
        organization_id=org_id,
        user_id=uuid.UUID(request.headers["x-probe-user"]),
        role=role,
        permissions=role_permissions(role),
    )


async def no_organizations(
    _request: Request, _session: AsyncSession, _org_id: uuid.UUID
) -> TenantContext:
    raise NotFound("Organization not found")


async def start(settings: Settings, *, with_resolver: bool) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    application.include_router(router)
    application.include_router(audit_router)
    # create_app wires the real gate (modules/orgs); replaced here by a stand-in, or by a
    # gate for which no organization exists.
    services_of(application).gate = header_resolver if with_resolver else no_organizations
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for application in start(settings, with_resolver=True):
        async with client_for(application) as client:
            yield client


@pytest.fixture(scope="module")
async def no_resolver(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for application in start(settings, with_resolver=False):
        async with client_for(application) as client:
            yield client


def as_role(role: str, user: uuid.UUID | None = None) -> dict[str, str]:
    return {"x-probe-role": role, "x-probe-user": str(user or uuid.uuid4())}


def comparable(response: httpx.Response) -> dict[str, object]:
    body = dict(response.json())
    for varying in ("path", "requestId", "timestamp"):
        body.pop(varying, None)
    return body


async def test_permission_holder_passes_and_the_session_is_bound(http: httpx.AsyncClient) -> None:
    org = uuid.uuid4()
    response = await http.post(
        f"/api/v1/orgs/{org}/probe-authz/projects", headers=as_role("manager")
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"organizationId": str(org), "role": "manager"}


async def test_member_without_the_permission_gets_403(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/api/v1/orgs/{uuid.uuid4()}/probe-authz/projects", headers=as_role("viewer")
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_non_member_gets_the_same_404_as_a_missing_organization(
    http: httpx.AsyncClient, no_resolver: httpx.AsyncClient
) -> None:
    path = f"/api/v1/orgs/{uuid.uuid4()}/probe-authz/projects"
    non_member = await http.post(path)
    missing = await no_resolver.post(path, headers=as_role("owner"))
    assert non_member.status_code == missing.status_code == 404
    assert comparable(non_member) == comparable(missing)
    assert comparable(missing)["code"] == "not_found"


async def test_malformed_org_id_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/api/v1/orgs/not-a-uuid/probe-authz/whoami", headers=as_role("owner")
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


async def test_own_scope_allows_own_rows_and_forbids_others(http: httpx.AsyncClient) -> None:
    me = uuid.uuid4()
    base = f"/api/v1/orgs/{uuid.uuid4()}/probe-authz/tasks"
    mine = await http.delete(f"{base}/{me}", headers=as_role("member", me))
    theirs = await http.delete(f"{base}/{uuid.uuid4()}", headers=as_role("member", me))
    viewer = await http.delete(f"{base}/{me}", headers=as_role("viewer", me))
    assert (mine.status_code, theirs.status_code, viewer.status_code) == (204, 403, 403)


async def test_role_change_applies_on_the_very_next_request(http: httpx.AsyncClient) -> None:
    path = f"/api/v1/orgs/{uuid.uuid4()}/probe-authz/projects"
    user = uuid.uuid4()
    assert (await http.post(path, headers=as_role("admin", user))).status_code == 200
    assert (await http.post(path, headers=as_role("viewer", user))).status_code == 403


async def test_required_permissions_are_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    create = paths["/api/v1/orgs/{orgId}/probe-authz/projects"]["post"]
    assert create["x-permissions"] == ["projects:write"]
    assert "`projects:write`" in create["description"]
    assert any(p["name"] == "orgId" and p["in"] == "path" for p in create["parameters"])
    delete = paths["/api/v1/orgs/{orgId}/probe-authz/tasks/{createdBy}"]["delete"]
    assert delete["x-permissions"] == ["tasks:delete"]
    assert "x-permissions" not in paths["/api/v1/orgs/{orgId}/probe-authz/whoami"]["get"]


async def test_router_level_permission_applies_and_is_documented(
    http: httpx.AsyncClient,
) -> None:
    path = f"/api/v1/orgs/{uuid.uuid4()}/probe-audit/entries"
    assert (await http.get(path, headers=as_role("viewer"))).status_code == 403
    assert (await http.get(path, headers=as_role("manager"))).status_code == 200
    document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/api/v1/orgs/{orgId}/probe-audit/entries"]["get"]
    assert operation["x-permissions"] == ["audit:read"]
