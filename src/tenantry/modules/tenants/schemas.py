"""The platform admin's view of tenant databases (API.md, "Tenancy modes")."""

from __future__ import annotations

import uuid

from pydantic import Field

from tenantry.core.responses import ListQuery, RequestSchema, Schema


class TenantListQuery(ListQuery):
    sort_fields = ("createdAt",)


class TenantOut(Schema):
    organization_id: uuid.UUID
    server: str  # as configured, password hidden
    database: str
    schema_revision: str | None
    state: str  # provisioning | ready | moving | failed | dropping
    size_bytes: int | None  # on disk; null when the database is missing


class RestoreRequest(RequestSchema):
    file_id: uuid.UUID  # a backup file of this organization (the result of a backup job)


class MoveRequest(RequestSchema):
    server: str = Field(min_length=1, max_length=500)  # as GET /admin/tenants names it
