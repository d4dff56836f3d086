"""The tenant registry (control database): which database each organization's rows are in."""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, Timestamped


class TenantState(StrEnum):
    PROVISIONING = "provisioning"  # registered, database being created or migrated
    READY = "ready"  # serving
    MOVING = "moving"  # being restored or moved (reads only; writes answer 503)
    FAILED = "failed"  # provisioning failed; `tenantry tenants provision` repairs it
    DROPPING = "dropping"  # the organization was erased: its database is being dropped


SERVING_STATES = (TenantState.READY.value, TenantState.MOVING.value)


class TenantDatabase(Timestamped, Base):
    """One organization's database. No foreign key to `organizations`: the row is written
    (state `provisioning`) before the organization is, so a crash in between is visible
    and repaired (modules/tenants/service.py)."""

    __tablename__ = "tenant_databases"
    __table_args__ = (
        CheckConstraint(
            "state IN ('provisioning', 'ready', 'moving', 'failed', 'dropping')",
            name="state",
        ),
        Index("ix_tenant_databases_server", "server"),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The server as TENANT_DATABASE_SERVERS names it, password hidden (or the directory).
    server: Mapped[str] = mapped_column(String(500))
    database: Mapped[str] = mapped_column(String(200))
    schema_revision: Mapped[str | None] = mapped_column(String(32), default=None)
    state: Mapped[str] = mapped_column(String(16), default=TenantState.PROVISIONING.value)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The database that is not the serving one (operations.py): the copy a restore or move
    # is building while `moving`, the old one a finished switch has still to drop. What a
    # crash leaves here, `repair` drops.
    spare_server: Mapped[str | None] = mapped_column(String(500), default=None)
    spare_database: Mapped[str | None] = mapped_column(String(200), default=None)
