"""Plans: per-organization overrides, trial/conversion/suspension dates, daily usage.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.core.db import UTCDateTime
from tenantry.core.rls import disable_rls, enable_rls

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATES = ("expired_at", "converted_at", "suspended_at")


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan_overrides", sa.JSON(), nullable=True))
        for name in DATES:
            batch_op.add_column(sa.Column(name, UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_organizations_status_trial_ends_at", ["subscription_status", "trial_ends_at"]
        )
    op.create_table(
        "usage_daily",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("active_users", sa.Integer(), nullable=False),
        sa.Column("records_created", sa.Integer(), nullable=False),
        sa.Column("storage_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_usage_daily_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "day", name=op.f("pk_usage_daily")),
    )
    enable_rls(op, "usage_daily")


def downgrade() -> None:
    disable_rls(op, "usage_daily")
    op.drop_table("usage_daily")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_index("ix_organizations_status_trial_ends_at")
        for name in reversed(DATES):
            batch_op.drop_column(name)
        batch_op.drop_column("plan_overrides")
