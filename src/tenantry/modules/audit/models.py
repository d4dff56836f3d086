"""The audit log: append-only, one row per tenant mutation."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from tenantry.core.db import Base, Companion, TenantOwned, UUIDPrimaryKey, utcnow


class AuditLog(UUIDPrimaryKey, TenantOwned, Companion, Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_organization_id_created_at", "organization_id", "created_at"),
        Index(
            "ix_audit_logs_organization_id_entity", "organization_id", "entity_type", "entity_id"
        ),
        # A person's entries in every organization (GET /users/me/export).
        Index("ix_audit_logs_actor_user_id", "actor_user_id"),
    )

    action: Mapped[str] = mapped_column(String(100))
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_api_key_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    request_id: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditLogImmutable(RuntimeError):
    """An audit entry was about to be changed or deleted: the log is append-only."""


def _refuse_changes(session: Session, _flush_context: Any, _instances: Any) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditLog) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditLogImmutable("audit log entries cannot be updated or deleted")


def _refuse_bulk_changes(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(
        mapper.class_ is AuditLog for mapper in state.all_mappers
    ):
        raise AuditLogImmutable("audit log entries cannot be updated or deleted")


# Registered on the app's sessions by tenantry/sessions.py.
AUDIT_LISTENERS = (
    ("before_flush", _refuse_changes),
    ("do_orm_execute", _refuse_bulk_changes),
)
