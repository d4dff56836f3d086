"""API keys (API.md, API keys): create (the key is shown once), list, revoke."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import ConfigDict, Field
from starlette.responses import Response

from tenantry.core.authz import require
from tenantry.core.dates import AwareIsoDateTime
from tenantry.core.permissions import KNOWN_PERMISSIONS
from tenantry.core.responses import Envelope, ListQuery, Page, RequestSchema, Schema, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.api_keys import service
from tenantry.modules.api_keys.models import ApiKey
from tenantry.modules.plans.enforce import feature

router = APIRouter(
    prefix="/orgs/{orgId}/api-keys",
    tags=["api keys"],
    route_class=UnitOfWorkRoute,
    dependencies=[Depends(feature("apiKeys"))],
)
Manager = Annotated[TenantContext, Depends(require("api_keys:manage"))]
KeyId = Annotated[uuid.UUID, Path(alias="keyId")]


# The document lists the permission strings the service accepts (others are a 400).
Permission = Annotated[str, Field(json_schema_extra={"enum": sorted(KNOWN_PERMISSIONS)})]


class CreateApiKey(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "CI deploys", "permissions": ["projects:read", "tasks:write"]}]
        }
    )

    name: str = Field(min_length=1, max_length=100)
    permissions: list[Permission] = Field(min_length=1, max_length=100)
    expires_at: AwareIsoDateTime | None = None


class ApiKeyOut(Schema):
    id: uuid.UUID
    name: str
    prefix: str
    permissions: list[str]
    created_by: uuid.UUID | None
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    status: service.KeyStatus = "active"


class CreatedApiKey(ApiKeyOut):
    key: str


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    body: CreateApiKey, ctx: Manager, session: SessionDep
) -> Envelope[CreatedApiKey]:
    """A new key with a subset of the caller's permissions; `key` is shown this once only."""
    key, raw = await service.create_key(
        session, ctx, name=body.name, permissions=body.permissions, expires_at=body.expires_at
    )
    return ok(CreatedApiKey(**ApiKeyOut.model_validate(key).model_dump(), key=raw))


@router.get("")
async def list_api_keys(
    _ctx: Manager, session: SessionDep, query: Annotated[ListQuery, Query()]
) -> Page[ApiKeyOut]:
    """The organization's keys; `status` is `revoked` once the key or its creator is gone."""
    rows, total = await service.list_keys(session, offset=query.offset, limit=query.limit)
    return page(_out(rows), total=total, page=query.page, limit=query.limit)


def _out(rows: list[tuple[ApiKey, service.KeyStatus]]) -> list[ApiKeyOut]:
    return [
        ApiKeyOut.model_validate(row).model_copy(update={"status": state}) for row, state in rows
    ]


@router.delete("/{keyId}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def revoke_api_key(key_id: KeyId, _ctx: Manager, session: SessionDep) -> None:
    """Revoke a key: it answers 401 from the next request on."""
    await service.revoke_key(session, key_id)
