"""Small dependencies of the organizations routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tenantry.core.cache import Cache
from tenantry.core.tenantdb import TenantProvisioner
from tenantry.services import services_of


async def get_cache(request: Request) -> Cache:
    return services_of(request).cache


CacheDep = Annotated[Cache, Depends(get_cache)]


async def get_tenant_provisioner(request: Request) -> TenantProvisioner | None:
    """Database per tenant: what creates a new organization's database (None when shared)."""
    return services_of(request).tenant_databases


TenantProvisionerDep = Annotated[TenantProvisioner | None, Depends(get_tenant_provisioner)]
