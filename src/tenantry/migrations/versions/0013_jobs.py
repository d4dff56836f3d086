"""Worker liveness (`job_workers`) and the index behind the hourly invitation cap.

`job_workers` holds one row per running worker process with a heartbeat counter; a row
whose counter stops moving marks a dead worker, whose jobs are requeued at once (before
their lease expires). It is platform data, not tenant data: no row-level security.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.core.db import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("beats", sa.BigInteger(), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_workers")),
    )
    op.create_index(
        "ix_invitations_organization_id_created_at",
        "invitations",
        ["organization_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_invitations_organization_id_created_at", table_name="invitations")
    op.drop_table("job_workers")
