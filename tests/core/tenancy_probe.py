"""Probe tenant-owned models for the tenancy tests (not part of the product).

Their own metadata, created by the tests; `organization_id` has no foreign key because
the organizations table belongs to a later module.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tenantry.core.db import (
    NAMING_CONVENTION,
    AuditColumns,
    Base,
    SoftDeletable,
    TenantOwned,
    Timestamped,
    UUIDPrimaryKey,
)


class TenancyProbeBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = Base.type_annotation_map


class Notebook(
    TenancyProbeBase, UUIDPrimaryKey, TenantOwned, SoftDeletable, AuditColumns, Timestamped
):
    __tablename__ = "probe_tenancy_notebooks"

    title: Mapped[str] = mapped_column(String(100))
    notes: Mapped[list[Note]] = relationship(back_populates="notebook", order_by="Note.body")


class Note(TenancyProbeBase, UUIDPrimaryKey, TenantOwned, SoftDeletable, AuditColumns):
    __tablename__ = "probe_tenancy_notes"

    notebook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("probe_tenancy_notebooks.id"))
    body: Mapped[str] = mapped_column(String(100))
    notebook: Mapped[Notebook] = relationship(back_populates="notes")


class Label(TenancyProbeBase, UUIDPrimaryKey, TenantOwned):
    """Tenant-owned without soft delete or audit columns."""

    __tablename__ = "probe_tenancy_labels"

    name: Mapped[str] = mapped_column(String(100))
