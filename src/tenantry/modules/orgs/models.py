"""Organizations (the tenants), memberships and invitations.

`Organization` and `Membership` are platform tables, not `TenantOwned`: an organization
is the tenant itself, and memberships are the index of who belongs where, read per
organization (members, the tenant gate) and per user ("my organizations"). Every query on
them filters by organization or user explicitly, in `modules/orgs` only. Invitations are
tenant data (`TenantOwned`, row-level security on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import (
    Base,
    ControlPlane,
    SoftDeletable,
    TenantOwned,
    Timestamped,
    UUIDPrimaryKey,
)


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    EXPIRED = "expired"
    CANCELED = "canceled"


TRIAL_PLAN = "trial"


class Organization(UUIDPrimaryKey, Timestamped, SoftDeletable, Base):
    __tablename__ = "organizations"
    __table_args__ = (
        Index("ix_organizations_status_trial_ends_at", "subscription_status", "trial_ends_at"),
    )

    name: Mapped[str] = mapped_column(String(100))
    # Unique among all organizations, deleted ones included (a slug is never reused).
    slug: Mapped[str] = mapped_column(String(50), unique=True)
    plan: Mapped[str] = mapped_column(String(50), default=TRIAL_PLAN)
    subscription_status: Mapped[str] = mapped_column(
        String(20), default=SubscriptionStatus.TRIALING.value
    )
    trial_ends_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # modules/plans: a platform admin's per-organization overrides of the plan's features
    # and limits; when the trial expired / a paid plan began; a suspension (403, data kept).
    plan_overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    expired_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    converted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    suspended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)


class Membership(UUIDPrimaryKey, Timestamped, Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("organization_id", "user_id"),
        Index("ix_memberships_user_id", "user_id"),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))


class Invitation(UUIDPrimaryKey, TenantOwned, ControlPlane, Timestamped, Base):
    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_organization_id_email", "organization_id", "email"),
        Index("ix_invitations_token_hash", "token_hash", unique=True),
        # the hourly cap counts an organization's invitations of the last hour
        Index("ix_invitations_organization_id_created_at", "organization_id", "created_at"),
    )

    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime]
    invited_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= dt.datetime.now(dt.UTC):
            return "expired"
        return "pending"
