"""Idempotency keys per principal (a user or an API key), not per organization; an index
for a person's audit entries across organizations (the GDPR export).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Existing keys get an empty principal: no caller matches it, so they are simply never
replayed again (they expire within 24 hours anyway).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("principal", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.drop_constraint("uq_idempotency_keys_organization_id_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_idempotency_keys_organization_id_principal_key",
            ["organization_id", "principal", "key"],
        )
    op.create_index("ix_audit_logs_actor_user_id", "audit_logs", ["actor_user_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_logs_actor_user_id", table_name="audit_logs")
    # Back to one key per organization: rows that would collide are dropped first.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "DELETE FROM idempotency_keys WHERE id NOT IN ("
            "SELECT MIN(id) FROM idempotency_keys GROUP BY organization_id, key)"
        )
    elif dialect == "mariadb":  # a multi-table DELETE; `key` is a reserved word there
        op.execute(
            "DELETE a FROM idempotency_keys a JOIN idempotency_keys b "
            "ON a.organization_id = b.organization_id AND a.`key` = b.`key` AND a.id > b.id"
        )
    else:
        op.execute(
            "DELETE FROM idempotency_keys a USING idempotency_keys b "
            "WHERE a.organization_id = b.organization_id AND a.key = b.key AND a.id > b.id"
        )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_constraint(
            "uq_idempotency_keys_organization_id_principal_key", type_="unique"
        )
        batch_op.create_unique_constraint(
            "uq_idempotency_keys_organization_id_key", ["organization_id", "key"]
        )
        batch_op.drop_column("principal")
