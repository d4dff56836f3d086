"""Projects and tasks (the example tenant resources) and the idempotency keys of creates.

Each list/filter/sort path has an index leading with `organization_id`, partial on live
rows (`deleted_at IS NULL`), plus one partial index for the trash (docs/performance.md).
Row-level security on all three tables (PostgreSQL).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tenantry.core.db import UTCDateTime
from tenantry.core.rls import disable_rls, enable_rls

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TENANT_TABLES = ("projects", "tasks", "idempotency_keys")


def _tenant_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
    ]


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["organization_id"],
        ["organizations.id"],
        name=f"fk_{table}_organization_id_organizations",
        ondelete="CASCADE",
    )


def _record_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    ]


def _live_index(table: str, *columns: str) -> None:
    name = f"ix_{table}_live_" + "_".join(c.removesuffix("_id") for c in columns)
    live = sa.text("deleted_at IS NULL")
    op.create_index(
        name, table, ["organization_id", *columns], postgresql_where=live, sqlite_where=live
    )


def _trash_index(table: str) -> None:
    deleted = sa.text("deleted_at IS NOT NULL")
    op.create_index(
        f"ix_{table}_trash",
        table,
        ["organization_id", "deleted_at", "id"],
        postgresql_where=deleted,
        sqlite_where=deleted,
    )


def upgrade() -> None:
    op.create_table(
        "projects",
        *_tenant_columns(),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        *_record_columns(),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_projects_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        _org_fk("projects"),
    )
    for columns in (("created_at", "id"), ("updated_at", "id"), ("name", "id")):
        _live_index("projects", *columns)
    _live_index("projects", "status", "created_at", "id")
    _trash_index("projects")

    op.create_table(
        "tasks",
        *_tenant_columns(),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", sa.Uuid(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        *_record_columns(),
        sa.CheckConstraint(
            "status IN ('todo', 'in_progress', 'done', 'archived')", name=op.f("ck_tasks_status")
        ),
        sa.CheckConstraint(
            "priority IN ('low', 'medium', 'high', 'urgent')", name=op.f("ck_tasks_priority")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_tasks_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
            name=op.f("fk_tasks_assignee_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        _org_fk("tasks"),
    )
    for columns in (("created_at", "id"), ("updated_at", "id"), ("title", "id")):
        _live_index("tasks", *columns)
    _live_index("tasks", "due_date", "id")
    _live_index("tasks", "project_id", "created_at", "id")
    _live_index("tasks", "status", "created_at", "id")
    _live_index("tasks", "assignee_id", "created_at", "id")
    _trash_index("tasks")

    op.create_table(
        "idempotency_keys",
        *_tenant_columns(),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        _org_fk("idempotency_keys"),
        sa.UniqueConstraint(
            "organization_id", "key", name=op.f("uq_idempotency_keys_organization_id_key")
        ),
    )
    op.create_index(
        "ix_idempotency_keys_organization_id_created_at",
        "idempotency_keys",
        ["organization_id", "created_at"],
    )
    for table in TENANT_TABLES:
        enable_rls(op, table)


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        disable_rls(op, table)
    op.drop_table("idempotency_keys")
    op.drop_table("tasks")
    op.drop_table("projects")
