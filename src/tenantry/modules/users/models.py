"""The `users` table: platform accounts (organizations and memberships build on it)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, SoftDeletable, Timestamped, UUIDPrimaryKey


class PlatformRole(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"
    SUPER_ADMIN = "SUPER_ADMIN"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: PlatformRole) -> bool:
        return self.rank >= other.rank


_RANKS = {PlatformRole.USER: 0, PlatformRole.ADMIN: 1, PlatformRole.SUPER_ADMIN: 2}


class User(UUIDPrimaryKey, Timestamped, SoftDeletable, Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_created_at", "created_at"),)

    # Stored normalised (trimmed, lower case): the unique index is case-insensitive by design.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(100), default=None)
    last_name: Mapped[str | None] = mapped_column(String(100), default=None)
    role: Mapped[str] = mapped_column(String(20), default=PlatformRole.USER.value)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Access tokens issued before this moment are refused (logout-all, password reset...).
    sessions_valid_after: Mapped[dt.datetime | None] = mapped_column(default=None)

    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mfa_secret_encrypted: Mapped[str | None] = mapped_column(String(255), default=None)
    mfa_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    mfa_failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    mfa_locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)

    @property
    def platform_role(self) -> PlatformRole:
        return PlatformRole(self.role)

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def is_usable(self) -> bool:
        """May sign in and act: active and not deleted."""
        return self.is_active and self.deleted_at is None
