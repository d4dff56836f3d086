"""`identities`: which user an external provider's subject is (one user, several providers)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, UUIDPrimaryKey, utcnow


class Identity(UUIDPrimaryKey, Base):
    """The link `(provider, subject)` → user, made on the subject's first token."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(50))  # AUTH_PROVIDERS name
    subject: Mapped[str] = mapped_column(String(255))  # the provider's `sub` (Clerk's user id)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
