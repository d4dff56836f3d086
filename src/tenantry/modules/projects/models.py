"""The `projects` table: the example tenant resource every other one is modelled on."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import (
    AuditColumns,
    Base,
    SoftDeletable,
    TenantOwned,
    Timestamped,
    UUIDPrimaryKey,
    Versioned,
)
from tenantry.core.indexes import list_indexes, trash_index


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class Project(
    UUIDPrimaryKey, TenantOwned, Timestamped, SoftDeletable, AuditColumns, Versioned, Base
):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'archived')", name="status"),
        # One index per list path (docs/performance.md): sort key + id for keyset pages.
        *list_indexes("projects", "created_at", "id"),
        *list_indexes("projects", "updated_at", "id"),
        *list_indexes("projects", "name", "id"),
        *list_indexes("projects", "status", "created_at", "id"),
        trash_index("projects"),
    )

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default=ProjectStatus.ACTIVE.value)
