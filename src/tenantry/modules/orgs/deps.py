"""Small dependencies of the organizations routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tenantry.core.cache import Cache


async def get_cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


CacheDep = Annotated[Cache, Depends(get_cache)]
