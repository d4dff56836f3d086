"""Small dependencies of the organizations routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tenantry.core.cache import Cache
from tenantry.services import services_of


async def get_cache(request: Request) -> Cache:
    return services_of(request).cache


CacheDep = Annotated[Cache, Depends(get_cache)]
