"""The platform admin's view of tenant databases (API.md, "Tenancy modes")."""

from __future__ import annotations

import uuid

from tenantry.core.responses import ListQuery, Schema


class TenantListQuery(ListQuery):
    sort_fields = ("createdAt",)


class TenantOut(Schema):
    organization_id: uuid.UUID
    server: str  # as configured, password hidden
    database: str
    schema_revision: str | None
    state: str  # provisioning | ready | moving | failed
    size_bytes: int | None  # on disk; null when the database is missing
