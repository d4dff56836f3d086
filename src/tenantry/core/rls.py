"""PostgreSQL row-level security: the database enforces tenant isolation a second time.

Each tenant table gets a policy that admits a row only when its `organization_id` equals
the setting `app.org_id`, which `core/tenancy.py` and `core/hotreads.py` make the bound
`TenantContext`'s organization (none, unbound) before a connection's first statement, at
session level and only when the pooled connection holds another value (`core/db.py`).
An unbound session, or a raw connection, sees and writes no tenant row. The
`all_tenants` escape hatch sets `app.all_tenants = 'on'` for the one statement that asked
for it (transaction-local).

RLS does not apply to superusers, to roles with BYPASSRLS, nor (without FORCE) to the
table owner. Migrations run as the owner; the application switches to `APP_ROLE`
(setting `DATABASE_APP_ROLE`, see docs/tenancy.md), created by revision 0004 with
plain DML grants and nothing else.

In a migration:

    from tenantry.core.rls import enable_rls

    def upgrade() -> None:
        op.create_table("projects", ...)
        enable_rls(op, "projects")

Everything here is a no-op on SQLite.
"""

from __future__ import annotations

import re
from typing import Any

APP_ROLE = "tenantry_app"
ORG_SETTING = "app.org_id"
ALL_TENANTS_SETTING = "app.all_tenants"
POLICY_NAME = "tenant_isolation"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain lowercase SQL identifier")
    return f'"{name}"'


def tenant_policy_condition(column: str = "organization_id") -> str:
    """The SQL condition of the policy (USING and WITH CHECK)."""
    return (
        f"current_setting('{ALL_TENANTS_SETTING}', true) = 'on' OR "
        f"{_identifier(column)} = NULLIF(current_setting('{ORG_SETTING}', true), '')::uuid"
    )


def rls_statements(table: str, column: str = "organization_id") -> list[str]:
    name = _identifier(table)
    condition = tenant_policy_condition(column)
    return [
        f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}",
        f"CREATE POLICY {POLICY_NAME} ON {name} AS PERMISSIVE FOR ALL "
        f"USING ({condition}) WITH CHECK ({condition})",
    ]


def enable_rls(op: Any, table: str, *, column: str = "organization_id") -> None:
    """Enable and force row-level security on a tenant table (PostgreSQL only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in rls_statements(table, column):
        op.execute(statement)


def disable_rls(op: Any, table: str) -> None:
    """The downgrade of `enable_rls`."""
    if op.get_bind().dialect.name != "postgresql":
        return
    name = _identifier(table)
    op.execute(f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}")
    op.execute(f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY")


def app_role_statements(role: str = APP_ROLE, schema: str = "public") -> list[str]:
    """Create the application role (if absent) and give it DML on every table, now and later.

    NOLOGIN: the application connects as the migration user and `SET ROLE`s to it, or
    an operator gives it a password and connects as it directly. NOBYPASSRLS and no
    ownership: the policies apply to it.
    """
    name = _identifier(role)
    space = _identifier(schema)
    literal = role  # validated by _identifier above
    return [
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{literal}') THEN
                CREATE ROLE {name} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by another database's migration
        END
        $$
        """,  # noqa: S608 (validated identifiers, no user input)
        f"""
        DO $$
        BEGIN
            IF NOT pg_has_role(current_user, '{literal}', 'MEMBER') THEN
                EXECUTE 'GRANT {name} TO ' || quote_ident(current_user);
            END IF;
        END
        $$
        """,
        f"GRANT USAGE ON SCHEMA {space} TO {name}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {space} TO {name}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {space} TO {name}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {space} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {name}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {space} "
        f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {name}",
    ]


def revoke_app_role_statements(role: str = APP_ROLE, schema: str = "public") -> list[str]:
    name = _identifier(role)
    space = _identifier(schema)
    return [
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {space} "
        f"REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {name}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {space} "
        f"REVOKE USAGE, SELECT, UPDATE ON SEQUENCES FROM {name}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {space} FROM {name}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {space} FROM {name}",
        f"REVOKE USAGE ON SCHEMA {space} FROM {name}",
    ]
