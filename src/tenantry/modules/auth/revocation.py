"""Revocation of access tokens: the database decides, the cache remembers its answers.

An access token is good while its session row is not revoked, its user is usable (active,
not deleted) and it was issued after the user's `sessions_valid_after`. Those facts live
in the database; the cache (`Services.cache`: Redis in production, with a copy in each
process, core/nearcache.py) only speeds them up:

- `auth:session:{sid}` — either a *positive* fact, "this session was valid in the database,
  tokens issued before V are refused" (`ok:V`), written only from a database read and only
  for a short time (`SESSION_FACT_TTL_SECONDS`), or a *tombstone* (`revoked`) written on
  revocation for as long as an access token can live;
- `auth:valid-after:{user}` — access tokens issued before this moment are refused
  (logout-all, password reset, deactivation, deletion), as long as an access token lives.

A missing fact means "ask the database", never "not revoked": a cache that was cleared,
restarted or evicted its entries costs one query per session, not a resurrected token.
A fill uses set-if-absent, so a database read that raced a revocation cannot overwrite the
tombstone the revocation wrote. A warm request reads the facts in the round trip that
fetches its membership (`check`'s `keys`): no query.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from tenantry.core.cache import Cache, MemoryCache
from tenantry.core.db import Database
from tenantry.core.security import AccessClaims
from tenantry.modules.auth.models import AuthSession
from tenantry.modules.users.models import User

_GRACE_SECONDS = 60
# How long a positive fact may stand without the database being asked again. It bounds
# what a revocation can miss: a fill that raced it with the tombstone lost, or (in-process
# cache, several `--workers` in development) another process's copy.
SESSION_FACT_TTL_SECONDS = 60.0
LOCAL_SESSION_FACT_TTL_SECONDS = 5.0
_TOMBSTONE = b"revoked"
_VALID = b"ok:"


def session_fact_key(session_id: uuid.UUID) -> str:
    return f"auth:session:{session_id}"


def valid_after_key(user_id: uuid.UUID) -> str:
    return f"auth:valid-after:{user_id}"


class Revocations:
    def __init__(self, cache: Cache, database: Database, *, access_token_ttl_seconds: int) -> None:
        self._cache = cache
        self._database = database
        self._ttl = access_token_ttl_seconds + _GRACE_SECONDS
        self._fact_ttl = (
            LOCAL_SESSION_FACT_TTL_SECONDS
            if isinstance(cache, MemoryCache)
            else SESSION_FACT_TTL_SECONDS
        )

    async def invalidate_user_tokens(self, user_id: uuid.UUID, moment: dt.datetime) -> None:
        value = f"{moment.timestamp():.6f}".encode()
        await self._cache.set(valid_after_key(user_id), value, ttl=self._ttl)

    async def revoke_sessions(self, session_ids: list[uuid.UUID]) -> None:
        # Overwrites a positive fact; written before the commit, so a failed commit only
        # ends a session early (fail closed), never leaves one open.
        for session_id in session_ids:
            await self._cache.set(session_fact_key(session_id), _TOMBSTONE, ttl=self._ttl)

    async def check(self, claims: AccessClaims, keys: list[str]) -> tuple[bool, list[bytes | None]]:
        """Whether `claims` are revoked, plus the cache values of `keys`, in one round trip
        when the session's fact is cached (one query more when it is not)."""
        session_id = claims.session_id
        if session_id is None:
            # An external provider's token: its account was just read from the database
            # (modules/identity/service.py); only the cache values are wanted.
            return False, await self._cache.get_many(keys) if keys else []
        fact, valid_after, *values = await self._cache.get_many(
            [session_fact_key(session_id), valid_after_key(claims.user_id), *keys]
        )
        if valid_after is not None and claims.issued_at < float(valid_after):
            return True, values
        if fact is None:
            fact = await self._fact_from_database(claims, session_id)
        return _refuses(fact, claims), values

    async def account_revoked(self, user_id: uuid.UUID, issued_at: float) -> bool:
        """For a principal without a local session (an external provider's token, checked
        again by an open event stream): whether its account can no longer act, or a
        logout-all came after `issued_at`. The cached moment first, then the database."""
        valid_after = await self._cache.get(valid_after_key(user_id))
        if valid_after is not None and issued_at < float(valid_after):
            return True
        async with self._database.session(write=False) as session:
            row = (
                await session.execute(
                    select(User.is_active, User.deleted_at, User.sessions_valid_after).where(
                        User.id == user_id
                    )
                )
            ).first()
        if row is None or not row.is_active or row.deleted_at is not None:
            return True
        after = row.sessions_valid_after
        return after is not None and issued_at < after.timestamp()

    async def _fact_from_database(self, claims: AccessClaims, session_id: uuid.UUID) -> bytes:
        # A short read session of its own: the callers' sessions may be write sessions
        # (SQLite's BEGIN IMMEDIATE) or not exist at all.
        async with self._database.session(write=False) as session:
            row = (
                await session.execute(
                    select(
                        AuthSession.revoked_at,
                        User.is_active,
                        User.deleted_at,
                        User.sessions_valid_after,
                    )
                    .join(User, User.id == AuthSession.user_id)
                    .where(AuthSession.id == session_id, User.id == claims.user_id)
                )
            ).first()
        key = session_fact_key(session_id)
        if row is None or row.revoked_at is not None or not row.is_active or row.deleted_at:
            # Permanent: a revoked session never comes back (deactivation revokes them all).
            await self._cache.set(key, _TOMBSTONE, ttl=self._ttl)
            return _TOMBSTONE
        after = row.sessions_valid_after.timestamp() if row.sessions_valid_after else 0.0
        fact = _VALID + f"{after:.6f}".encode()
        await self._cache.add(key, fact, ttl=self._fact_ttl)
        return fact


def _refuses(fact: bytes, claims: AccessClaims) -> bool:
    if not fact.startswith(_VALID):
        return True  # the tombstone, or anything this version does not understand
    try:
        return claims.issued_at < float(fact[len(_VALID) :])
    except ValueError:
        return True
