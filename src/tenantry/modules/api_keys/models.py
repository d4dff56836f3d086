"""API keys: an organization's machine credentials, stored only as a hash."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, ControlPlane, TenantOwned, Timestamped, UUIDPrimaryKey


class ApiKey(UUIDPrimaryKey, TenantOwned, ControlPlane, Timestamped, Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_organization_id_prefix", "organization_id", "prefix"),)

    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    permissions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
