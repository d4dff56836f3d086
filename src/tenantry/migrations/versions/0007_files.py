"""Files: uploaded files' metadata and each organization's storage usage.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.core.db import UTCDateTime
from tenantry.core.rls import disable_rls, enable_rls

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_files_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_files_storage_key")),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(
            "ix_files_organization_id_created_at",
            ["organization_id", "created_at", "id"],
            unique=False,
            postgresql_where=LIVE,
        )
        batch_op.create_index(
            "ix_files_organization_id_filename",
            ["organization_id", "filename"],
            unique=False,
            postgresql_where=LIVE,
        )
        batch_op.create_index(
            "ix_files_organization_id_size",
            ["organization_id", "size"],
            unique=False,
            postgresql_where=LIVE,
        )
    enable_rls(op, "files")
    op.create_table(
        "storage_usage",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("bytes_used", sa.BigInteger(), nullable=False),
        sa.Column("files_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_storage_usage_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_storage_usage")),
    )
    enable_rls(op, "storage_usage")


def downgrade() -> None:
    disable_rls(op, "storage_usage")
    op.drop_table("storage_usage")
    disable_rls(op, "files")
    # The table's indexes go with it (MariaDB refuses to drop an index a foreign key uses).
    op.drop_table("files")
