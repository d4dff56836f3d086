"""Platform admin, database per tenant: GET /admin/tenants (mounted only in that mode)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from tenantry.core.errors import NotFound
from tenantry.core.responses import Page, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.modules.auth.deps import PlatformAdmin
from tenantry.modules.tenants.schemas import TenantListQuery, TenantOut
from tenantry.modules.tenants.service import TenantDatabases
from tenantry.services import services_of

router = APIRouter(prefix="/admin", tags=["platform administration"], route_class=UnitOfWorkRoute)


async def get_tenant_databases(request: Request) -> TenantDatabases:
    tenants = services_of(request).tenant_databases
    if tenants is None:  # the router is only mounted in database mode
        raise NotFound()
    return tenants


TenantDatabasesDep = Annotated[TenantDatabases, Depends(get_tenant_databases)]


@router.get("/tenants")
async def list_tenants(
    _admin: PlatformAdmin,
    session: SessionDep,
    tenants: TenantDatabasesDep,
    query: Annotated[TenantListQuery, Query()],
) -> Page[TenantOut]:
    """Every tenant database: organization, server, database, schema revision, size."""
    rows, total = await tenants.list_tenants(session, offset=query.offset, limit=query.limit)
    items = [TenantOut.model_validate(row, from_attributes=True) for row in rows]
    return page(items, total=total, page=query.page, limit=query.limit)
