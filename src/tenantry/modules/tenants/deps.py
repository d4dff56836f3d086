"""The tenants feature as request dependencies (typed, from the app's `Services`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tenantry.core.tenantdb import TenantReads
from tenantry.services import services_of


async def get_tenant_reads(request: Request) -> TenantReads | None:
    """Reads across tenant databases in database mode; None in the shared mode, where one
    query over every organization's rows does."""
    tenants = services_of(request).tenant_databases
    return tenants.reads if tenants is not None else None


TenantReadsDep = Annotated[TenantReads | None, Depends(get_tenant_reads)]
