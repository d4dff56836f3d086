"""A member removed while their access is being read into the cache loses it at once.

`organization_access` reads the membership from the database, then stores the answer. A
removal that commits and invalidates in between must not be overwritten by the answer
read before it (that stale "member" would be served for the cache's whole TTL). The
interleaving is reproduced exactly: the app's real cache is wrapped so that the removal
runs, through the API, at the moment the reader is about to store its answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI

from tenantry.core.cache import Cache
from tenantry.modules.orgs.access import access_cache_key, organization_access
from tests.factories import add_member, create_org, register


class InvalidationBeforeStore(Cache):
    """The real cache, running `meanwhile()` once just before `key`'s answer is stored."""

    def __init__(self, inner: Cache, key: str, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._inner, self._key, self._meanwhile = inner, key, meanwhile
        self.fired = False

    async def _before_store(self, key: str) -> None:
        if key == self._key and not self.fired:
            self.fired = True
            await self._meanwhile()

    async def get(self, key: str) -> bytes | None:
        return await self._inner.get(key)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._before_store(key)
        await self._inner.set(key, value, ttl=ttl)

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        return await self._inner.add(key, value, ttl=ttl)

    async def replace_if(self, key: str, expected: bytes, value: bytes, *, ttl: float) -> bool:
        await self._before_store(key)
        return await self._inner.replace_if(key, expected, value, ttl=ttl)

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self._inner.delete_prefix(prefix)

    async def close(self) -> None:
        """The app owns the inner cache."""


async def test_a_removal_between_the_read_and_the_store_is_not_undone(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    member = await add_member(app, client, org, "viewer")
    org_id, user_id = uuid.UUID(org.id), uuid.UUID(member.id)
    key = access_cache_key(org_id, user_id)
    await app.state.cache.delete(key)  # the reader misses, as after expiry or eviction

    async def remove() -> None:
        removed = await client.delete(f"{org.path}/members/{member.id}", headers=org.owner.headers)
        assert removed.status_code == 204, removed.text

    cache = InvalidationBeforeStore(app.state.cache, key, remove)
    async with app.state.database.session(write=False) as session:
        # The request in flight was let in by the membership it read before the removal.
        access = await organization_access(cache, session, org_id, user_id)
        assert access is not None
        assert access.role == "viewer"
        await session.rollback()
    assert cache.fired

    response = await client.get(f"{org.path}/projects", headers=member.headers)
    assert response.status_code == 404
