"""The tenant registry (database per tenant): organization → server, database, revision, state.

Platform data in the control database, not tenant data: no row-level security. The table
exists in tenant databases too (one revision chain everywhere) and stays empty there.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.core.db import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_databases",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("server", sa.String(length=500), nullable=False),
        sa.Column("database", sa.String(length=200), nullable=False),
        sa.Column("schema_revision", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('provisioning', 'ready', 'moving', 'failed', 'dropping')",
            name=op.f("ck_tenant_databases_state"),
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_tenant_databases")),
    )
    op.create_index("ix_tenant_databases_server", "tenant_databases", ["server"])


def downgrade() -> None:
    op.drop_index("ix_tenant_databases_server", table_name="tenant_databases")
    op.drop_table("tenant_databases")
