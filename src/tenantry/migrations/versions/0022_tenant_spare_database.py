"""The tenant registry's spare database: the one a restore or move is building (state
`moving`), or the old one a finished switch has still to drop. `tenantry tenants provision`
drops what a crash left there.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenant_databases") as batch:
        batch.add_column(sa.Column("spare_server", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("spare_database", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant_databases") as batch:
        batch.drop_column("spare_database")
        batch.drop_column("spare_server")
