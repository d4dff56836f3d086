"""API keys: issue (secret shown once), list, revoke, authenticate.

A key is `tnt_` + 43 URL-safe characters (256 random bits). The database keeps the first
12 characters (`prefix`, to find the row) and the SHA-256 of the whole key (a 256-bit
secret needs no slow hash); the comparison is constant-time.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache
from tenantry.core.db import Database, utcnow
from tenantry.core.errors import BadRequest, Forbidden, NotFound, Unauthorized, ValidationFailed
from tenantry.core.listing import created_at_key, offset_page
from tenantry.core.permissions import KNOWN_PERMISSIONS, covers
from tenantry.core.routing import after_commit
from tenantry.core.security import sha256_hex
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.api_keys.models import ApiKey
from tenantry.modules.audit.service import created, record
from tenantry.modules.users.accounts import usable_account, usable_user_ids

KeyStatus = Literal["active", "expired", "revoked"]

KEY_PREFIX = "tnt_"
PREFIX_LENGTH = 12
KEY_SHAPE = re.compile(r"^tnt_[A-Za-z0-9_-]{43}$")
TOUCH_INTERVAL_SECONDS = 60


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(
    session: AsyncSession,
    context: TenantContext,
    *,
    name: str,
    permissions: Sequence[str],
    expires_at: dt.datetime | None,
) -> tuple[ApiKey, str]:
    """A new key for the bound organization and the raw secret (returned once, never stored)."""
    if context.user_id is None or context.api_key_id is not None:
        raise Forbidden("API keys are created by signed-in members")
    unknown = [p for p in permissions if p not in KNOWN_PERMISSIONS]
    if unknown:
        raise ValidationFailed(
            details=[
                {"field": "permissions", "message": f"Unknown permission {p!r}"} for p in unknown
            ]
        )
    if not permissions:
        raise BadRequest("An API key needs at least one permission")
    if not covers(context.permissions, permissions):
        raise Forbidden("An API key cannot have permissions its creator does not hold")
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed(details=[{"field": "expiresAt", "message": "must be in the future"}])
    raw = new_key()
    key = ApiKey(
        name=name,
        prefix=raw[:PREFIX_LENGTH],
        key_hash=sha256_hex(raw),
        permissions=sorted(set(permissions)),
        created_by=context.user_id,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    await record(
        session,
        "api_key.created",
        "api_key",
        key.id,
        created(
            {
                "name": name,
                "prefix": key.prefix,
                "permissions": key.permissions,
                "expires_at": expires_at,
                "key_hash": key.key_hash,
            }
        ),
    )
    return key, raw


async def list_keys(
    session: AsyncSession, *, offset: int, limit: int
) -> tuple[list[tuple[ApiKey, KeyStatus]], int]:
    """A page of the bound organization's keys, each with its status.

    A key whose creator can no longer use it (deactivated, deleted, erased) is `revoked`,
    like one revoked explicitly: it answers 401 (see `authenticate`).
    """
    rows, total = await offset_page(
        session,
        select(ApiKey),
        key=created_at_key(ApiKey.created_at),
        id_column=ApiKey.id,
        descending=True,
        offset=offset,
        limit=limit,
    )
    usable = await usable_user_ids(session, [k.created_by for k in rows if k.created_by])
    return [(key, _status(key, key.created_by in usable)) for key in rows], total


def _status(key: ApiKey, creator_usable: bool) -> KeyStatus:
    if key.revoked_at is not None or not creator_usable:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if key is None:
        raise NotFound("API key not found")
    if key.revoked_at is not None:
        return
    key.revoked_at = utcnow()
    await session.flush()
    await record(
        session, "api_key.revoked", "api_key", key.id, {"revoked_at": (None, key.revoked_at)}
    )


async def revoke_keys_created_by(
    session: AsyncSession, user_id: uuid.UUID, *, reason: str = "creator_left"
) -> None:
    """Revoke every live key `user_id` created in the bound organization, for good.

    `reason` (audited): the creator left, or was deactivated, deleted or erased; a key
    does not come back if they return.
    """
    keys = await session.scalars(
        select(ApiKey).where(ApiKey.created_by == user_id, ApiKey.revoked_at.is_(None))
    )
    for key in list(keys):
        key.revoked_at = utcnow()
        await session.flush()
        await record(
            session,
            "api_key.revoked",
            "api_key",
            key.id,
            {"revoked_at": (None, key.revoked_at), "reason": (None, reason)},
        )


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


async def authenticate(session: AsyncSession, raw: str) -> ApiKey | None:
    """The key of the bound organization matching `raw`, or None (another org's key, unknown).

    A malformed key is a 401; a revoked or expired one too, and one whose creator can no
    longer act (deactivated, deleted, erased): that is read from the users table in the
    same statement as the key, on every use, never from a cache.
    """
    if not KEY_SHAPE.match(raw):
        raise Unauthorized("The API key is invalid")
    digest = sha256_hex(raw)
    candidates = await session.execute(
        select(ApiKey, usable_account(ApiKey.created_by)).where(
            ApiKey.prefix == raw[:PREFIX_LENGTH]
        )
    )
    match: ApiKey | None = None
    creator_usable = False
    for candidate, usable in candidates:
        if hmac.compare_digest(candidate.key_hash, digest):
            match, creator_usable = candidate, bool(usable)
    if match is None:
        return None
    if match.revoked_at is not None or not creator_usable:
        raise Unauthorized("The API key has been revoked")
    if match.expires_at is not None and match.expires_at <= utcnow():
        raise Unauthorized("The API key has expired")
    return match


async def authenticate_id(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    """The bound organization's key `key_id` while it may still act (an open event stream
    checks again); 401 when it was revoked, expired or its creator can no longer act."""
    row = (
        await session.execute(
            select(ApiKey, usable_account(ApiKey.created_by)).where(ApiKey.id == key_id)
        )
    ).first()
    if row is None or row[0].revoked_at is not None or not row[1]:
        raise Unauthorized("The API key has been revoked")
    key: ApiKey = row[0]
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise Unauthorized("The API key has expired")
    return key


async def touch(session: AsyncSession, cache: Cache, database: Database, key: ApiKey) -> None:
    """Record `lastUsedAt` at most once a minute per key, after the request's commit.

    A cache entry (Redis across processes) marks a recent write; the write itself happens
    in a short transaction of its own, so a read request stays a read transaction.
    """
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < dt.timedelta(
        seconds=TOUCH_INTERVAL_SECONDS
    ):
        return
    marker = f"api_keys:touched:{key.id}"
    if await cache.get(marker) is not None:
        return
    await cache.set(marker, b"1", ttl=TOUCH_INTERVAL_SECONDS)
    key_id, organization_id = key.id, key.organization_id

    async def write() -> None:
        async with database.transaction() as own:
            bind_tenant(own, TenantContext.system(organization_id))
            await own.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )

    after_commit(session, write)
