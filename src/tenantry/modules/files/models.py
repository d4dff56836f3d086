"""Stored files (metadata; the bytes live in storage) and each organization's storage usage."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, text
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

LIVE = text("deleted_at IS NULL")


class StoredFile(
    Base, UUIDPrimaryKey, TenantOwned, Timestamped, SoftDeletable, AuditColumns, Versioned
):
    """An uploaded file. `filename` is a display name only; `storage_key` is made by the server."""

    __tablename__ = "files"
    __table_args__ = (
        Index(
            "ix_files_organization_id_created_at",
            "organization_id",
            "created_at",
            "id",
            postgresql_where=LIVE,
        ),
        Index(
            "ix_files_organization_id_filename",
            "organization_id",
            "filename",
            postgresql_where=LIVE,
        ),
        Index("ix_files_organization_id_size", "organization_id", "size", postgresql_where=LIVE),
    )

    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512), unique=True)


class StorageUsage(Base, TenantOwned):
    """Bytes and files an organization stores (live files), one row per organization.

    Changed in the same transaction as each upload and delete, so reading it is one
    primary-key lookup (the plan's `storageBytes` limit reads it).
    """

    __tablename__ = "storage_usage"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    bytes_used: Mapped[int] = mapped_column(BigInteger, default=0)
    files_count: Mapped[int] = mapped_column(Integer, default=0)
