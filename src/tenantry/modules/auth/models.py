"""Sessions (one per login: a refresh-token family), refresh tokens, one-time tokens, MFA codes.

Only SHA-256 hashes of tokens are stored; the raw values exist in responses and emails only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, UUIDPrimaryKey, utcnow


class AuthSession(UUIDPrimaryKey, Base):
    """One login on one device; every refresh token of the login belongs to it (the family)."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user_id_revoked_at", "user_id", "revoked_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), default=None)


class RefreshToken(UUIDPrimaryKey, Base):
    __tablename__ = "refresh_tokens"

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Set once, by compare-and-set, when the token is exchanged for its successor.
    rotated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The successor's raw value sealed with the app secret (SecretBox, this row's hash as
    # associated data), kept only for REFRESH_REUSE_GRACE_SECONDS after `rotated_at`: a
    # second tab presenting this token meanwhile gets the same successor.
    successor_sealed: Mapped[str | None] = mapped_column(Text, default=None)


class TokenPurpose(StrEnum):
    PASSWORD_RESET = "password_reset"
    EMAIL_VERIFICATION = "email_verification"


class OneTimeToken(UUIDPrimaryKey, Base):
    """Single-use tokens sent by email (password reset, email verification)."""

    __tablename__ = "one_time_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class MfaRecoveryCode(UUIDPrimaryKey, Base):
    __tablename__ = "mfa_recovery_codes"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
