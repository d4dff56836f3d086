"""Organizations (API.md, Organizations): create, list mine, get, update, delete; roles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from starlette.responses import Response

from tenantry.core.authz import require
from tenantry.core.db import new_id
from tenantry.core.openapi import errors
from tenantry.core.permissions import roles_table
from tenantry.core.responses import Envelope, Page, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.audit.deps import AuditRequest
from tenantry.modules.auth.deps import AccessClaimsDep, CurrentUser, SettingsDep
from tenantry.modules.orgs import service
from tenantry.modules.orgs.deps import CacheDep, TenantProvisionerDep
from tenantry.modules.orgs.schemas import (
    CreateOrganization,
    MyOrganizationOut,
    OrganizationListQuery,
    OrganizationOut,
    RoleOut,
    UpdateOrganization,
)

router = APIRouter(tags=["organizations"], route_class=UnitOfWorkRoute)
NO_CONTENT = status.HTTP_204_NO_CONTENT


@router.get("/roles")
async def list_roles(_claims: AccessClaimsDep) -> Envelope[list[RoleOut]]:
    """The built-in roles and their permissions (the one table in core/permissions.py)."""
    return ok([RoleOut.model_validate(row) for row in roles_table()])


@router.post(
    "/orgs",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AuditRequest],
    responses=errors({409: ["conflict"]}),
)
async def create_organization(
    body: CreateOrganization,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    tenant_databases: TenantProvisionerDep,
) -> Envelope[MyOrganizationOut]:
    """A new organization on a 30-day trial, with the caller as its owner."""
    organization_id = None
    if tenant_databases is not None:  # database per tenant: its database first, migrated
        organization_id = new_id()
        await tenant_databases.provision_for_request(session, organization_id)
    org = await service.create_organization(
        session, settings, user.id, body, organization_id=organization_id
    )
    out = OrganizationOut.model_validate(org).model_dump()
    return ok(MyOrganizationOut(**out, my_role="owner"))


@router.get("/orgs")
async def list_my_organizations(
    user: CurrentUser, session: SessionDep, query: Annotated[OrganizationListQuery, Query()]
) -> Page[MyOrganizationOut]:
    """The organizations the caller belongs to, with the caller's role in each."""
    rows, total = await service.list_my_organizations(session, user.id, query)
    items = [
        MyOrganizationOut(**OrganizationOut.model_validate(org).model_dump(), my_role=role)
        for org, role in rows
    ]
    return page(items, total=total, page=query.page, limit=query.limit)


@router.get("/orgs/{orgId}")
async def get_organization(
    ctx: Annotated[TenantContext, Depends(require("org:read"))], session: SessionDep
) -> Envelope[MyOrganizationOut]:
    """The organization, with the caller's role in it."""
    org = await service.current_organization(session)
    out = OrganizationOut.model_validate(org).model_dump()
    return ok(MyOrganizationOut(**out, my_role=ctx.role or ""))


@router.patch("/orgs/{orgId}")
async def update_organization(
    body: UpdateOrganization,
    _ctx: Annotated[TenantContext, Depends(require("org:update"))],
    session: SessionDep,
    cache: CacheDep,
) -> Envelope[OrganizationOut]:
    """Rename the organization or change its slug (`org:update`)."""
    org = await service.update_organization(session, cache, body)
    return ok(OrganizationOut.model_validate(org))


@router.delete("/orgs/{orgId}", status_code=NO_CONTENT, response_class=Response)
async def delete_organization(
    _ctx: Annotated[TenantContext, Depends(require("org:delete"))],
    session: SessionDep,
    cache: CacheDep,
) -> None:
    """Soft-delete the organization (owner only): every path under it answers 404 after."""
    await service.delete_organization(session, cache)
