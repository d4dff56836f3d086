"""Fast revocation checks for access tokens, through the cache (no database query).

Two facts are cached, each only as long as an access token can live (after that every
token they could reject has expired anyway):
- `auth:valid-after:{user}` — access tokens issued before this moment are refused
  (logout-all, password change/reset, deactivation, deletion);
- `auth:revoked-session:{sid}` — access tokens of this session are refused (logout,
  session revoked).
`CurrentUser` checks the same facts in the database as well, so a lost cache entry
cannot resurrect a session for routes that load the user.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Protocol

from tenantry.core.security import AccessClaims

_GRACE_SECONDS = 60


class CacheLike(Protocol):
    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...


class Revocations:
    def __init__(self, cache: CacheLike, *, access_token_ttl_seconds: int) -> None:
        self._cache = cache
        self._ttl = access_token_ttl_seconds + _GRACE_SECONDS

    async def invalidate_user_tokens(self, user_id: uuid.UUID, moment: dt.datetime) -> None:
        key = f"auth:valid-after:{user_id}"
        await self._cache.set(key, f"{moment.timestamp():.6f}".encode(), ttl=self._ttl)

    async def revoke_sessions(self, session_ids: list[uuid.UUID]) -> None:
        for session_id in session_ids:
            await self._cache.set(f"auth:revoked-session:{session_id}", b"1", ttl=self._ttl)

    async def is_revoked(self, claims: AccessClaims) -> bool:
        revoked, _ = await self.is_revoked_fetching(claims, [])
        return revoked

    async def is_revoked_fetching(
        self, claims: AccessClaims, keys: list[str]
    ) -> tuple[bool, list[bytes | None]]:
        """`is_revoked`, plus the cache values of `keys`, all in one round trip."""
        session_key = f"auth:revoked-session:{claims.session_id}"
        revoked, raw, *values = await self._cache.get_many(
            [session_key, f"auth:valid-after:{claims.user_id}", *keys]
        )
        if revoked is not None:
            return True, values
        return raw is not None and claims.issued_at < float(raw), values
