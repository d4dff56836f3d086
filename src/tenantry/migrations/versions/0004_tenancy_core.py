"""Tenancy core: the application role that row-level security applies to (PostgreSQL).

Creates `tenantry_app` (NOLOGIN, NOBYPASSRLS, owns nothing) when absent, lets the
migrating user `SET ROLE` to it, and grants it DML on every table of the schema, now
and for tables later revisions create. Tenant tables enable their policies with
`tenantry.core.rls.enable_rls(op, table)` in their own revisions. No-op on SQLite.
The role is cluster-wide and may serve other databases: the downgrade revokes this
database's grants and leaves the role.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

from tenantry.core.rls import APP_ROLE, app_role_statements, revoke_app_role_statements

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in app_role_statements(APP_ROLE):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in revoke_app_role_statements(APP_ROLE):
        op.execute(statement)
