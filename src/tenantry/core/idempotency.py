"""`Idempotency-Key` for create endpoints: a retried POST returns the first answer.

A client that did not see the answer to a POST (timeout, dropped connection) repeats it
with the same `Idempotency-Key` header. Within `IDEMPOTENCY_TTL` the repeat gets the
first response back — same status, same body — and nothing is created again; the same
key with a different request (body, method or path) is a 409. Keys belong to the caller
(a user, or an API key): another member sending the same key and body gets their own
answer, never the first caller's. They are stored in the organization (the table is
tenant-owned: automatic scoping, RLS), in the request's own
transaction, so a create that rolls back leaves no key behind. Each new key deletes its
organization's expired ones (index on `(organization_id, created_at)`).

One line in a create route:

    @router.post("", status_code=201, response_model=Envelope[ProjectOut])
    async def create_project(..., idempotency: IdempotencyDep) -> Response:
        return await idempotency.respond(201, lambda: _create(...))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy import JSON, Index, Integer, String, UniqueConstraint, delete, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.authz import TenantContextDep
from tenantry.core.db import Base, TenantOwned, UUIDPrimaryKey, utcnow
from tenantry.core.errors import Conflict, ValidationFailed
from tenantry.core.responses import JSONResponse
from tenantry.core.routing import SessionDep
from tenantry.core.tenancy import TenantContext

IDEMPOTENCY_TTL = dt.timedelta(hours=24)
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, like Stripe's keys

JSONType = JSON().with_variant(JSONB(), "postgresql")


class IdempotencyKey(UUIDPrimaryKey, TenantOwned, Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("organization_id", "principal", "key"),
        Index("ix_idempotency_keys_organization_id_created_at", "organization_id", "created_at"),
    )

    # Who sent the key (`principal_of`): a key is the caller's own, never shared with the
    # other members of the organization.
    principal: Mapped[str] = mapped_column(String(64), server_default="")
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": method, path and the JSON body (key order aside)."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotentRequest:
    """The `Idempotency-Key` of one create request (or none) and how to answer it."""

    def __init__(
        self, session: AsyncSession, principal: str, key: str | None, fingerprint: str
    ) -> None:
        self.session = session  # bound to the organization: keys are looked up per tenant
        self.principal = principal
        self.key = key
        self.fingerprint = fingerprint

    async def respond(
        self, status_code: int, produce: Callable[[], Awaitable[BaseModel]]
    ) -> JSONResponse:
        """The stored answer to this key, or `produce()`'s, remembered under the key."""
        if self.key is None:
            return _json(status_code, await produce())
        stored = await self._stored()
        if stored is not None:
            response = JSONResponse(stored.response_body, status_code=stored.status_code)
            response.headers[REPLAYED_HEADER] = "true"
            return response
        response = _json(status_code, await produce())
        # Keys expire after 24 h: each new key sweeps its organization's expired ones, so
        # the table stays small without a cross-tenant cleanup job.
        await self.session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - IDEMPOTENCY_TTL)
        )
        self.session.add(
            IdempotencyKey(
                principal=self.principal,
                key=self.key,
                fingerprint=self.fingerprint,
                status_code=status_code,
                response_body=orjson.loads(response.body),
            )
        )
        try:
            await self.session.flush()
        except IntegrityError:  # a concurrent twin with the same key committed first
            raise Conflict(
                "A request with this Idempotency-Key was processed concurrently; retry it",
                details=[{"field": "Idempotency-Key", "message": "Used concurrently"}],
            ) from None
        return response

    async def _stored(self) -> IdempotencyKey | None:
        row = await self.session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.principal == self.principal, IdempotencyKey.key == self.key
            )
        )
        if row is None:
            return None
        if row.created_at < utcnow() - IDEMPOTENCY_TTL:
            await self.session.delete(row)  # expired: the key is free again
            await self.session.flush()
            return None
        if row.fingerprint != self.fingerprint:
            raise Conflict(
                "This Idempotency-Key was used for a different request",
                details=[{"field": "Idempotency-Key", "message": "Reused with another body"}],
            )
        return row


def principal_of(context: TenantContext) -> str:
    """Whose keys: an API key's own (not its creator's), else the signed-in user's."""
    if context.api_key_id is not None:
        return f"api_key:{context.api_key_id}"
    return f"user:{context.user_id}"


def _json(status_code: int, model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", by_alias=True), status_code=status_code)


async def get_idempotent_request(
    request: Request,
    session: SessionDep,
    context: TenantContextDep,  # binds the session to the organization first
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat a create safely: same key + same body within 24 h → "
            "the first response, nothing created again",
            json_schema_extra={"pattern": _KEY_PATTERN.pattern},
        ),
    ] = None,
) -> IdempotentRequest:
    if idempotency_key is not None and not _KEY_PATTERN.match(idempotency_key):
        raise ValidationFailed(
            details=[{"field": "Idempotency-Key", "message": "1 to 255 visible ASCII characters"}]
        )
    fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
    return IdempotentRequest(session, principal_of(context), idempotency_key, fingerprint)


IdempotencyDep = Annotated[IdempotentRequest, Depends(get_idempotent_request)]

__all__ = ["IDEMPOTENCY_TTL", "IdempotencyDep", "IdempotencyKey", "IdempotentRequest"]
