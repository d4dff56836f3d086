"""Task search through a trigram index under row-level security (PostgreSQL).

`search=` is a case-insensitive substring match. Under RLS the planner may not evaluate
a non-leakproof qual such as `ILIKE` before the policy's qual, so a trigram index on
`tasks.title` is never used for the application role: every search read every task of
the organization. This revision adds (on PostgreSQL; SQLite and MariaDB get a B-tree
`ix_tasks_search`, see `tenantry.core.indexes.trigram_search_index`):

- the `pg_trgm` and `btree_gin` extensions (both trusted: a database owner may create
  them);
- `ix_tasks_search`, one GIN index on `(organization_id, title, description)` — the
  organization is part of every lookup, so a search reads only its tenant's entries;
- `tenantry_task_search(pattern, max_rows)`, a `SECURITY DEFINER` SQL function owned by
  the migrating user: at most `max_rows` ids of the tasks of the organization in the
  `app.org_id` setting (the very setting the RLS policies read — never a parameter)
  whose title or description matches `pattern` (`ILIKE`, backslash escapes). It cannot
  return another tenant's ids, even when called directly. Only the application role
  (and the owner) may execute it.

docs/tenancy.md ("Search under RLS") gives the reasoning. No-op on SQLite, which keeps
its `LIKE` scan.

Revision ID: 0016
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.core.indexes import SEARCH_PREFIX_LENGTHS
from tenantry.core.rls import APP_ROLE

revision: str = "0016"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_FUNCTION = "tenantry_task_search"  # reads `tenantry.core.rls.ORG_SETTING`


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # The models' index, empty on SQLite (its LIKE scans): core/indexes.py.
        op.create_index(
            "ix_tasks_search",
            "tasks",
            ["organization_id", "title", "description"],
            sqlite_where=sa.text("0"),
            mariadb_length=SEARCH_PREFIX_LENGTHS,
        )
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute(
        "CREATE INDEX ix_tasks_search ON tasks USING gin "
        "(organization_id, title gin_trgm_ops, description gin_trgm_ops)"
    )
    # SECURITY DEFINER: runs as its owner, so the policy (whose qual would be evaluated
    # before the non-leakproof ILIKE, keeping the index out) is not in the way when the
    # owner bypasses RLS; the organization filter is the function's own, read from the
    # setting the policies read. `search_path` pinned: a caller cannot shadow `tasks` or
    # an operator. EXECUTE ... USING plans with the actual pattern: a rare term goes
    # through the trigram index, a common one walks the organization's rows and stops
    # at `max_rows` (a generic plan would build the whole trigram bitmap every time).
    op.execute(
        """
        CREATE FUNCTION tenantry_task_search(pattern text, max_rows integer)
        RETURNS TABLE (id uuid)
        LANGUAGE plpgsql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, public, pg_temp
        AS $$
        DECLARE
            org uuid := NULLIF(current_setting('app.org_id', true), '')::uuid;
        BEGIN
            IF org IS NULL THEN
                RETURN;
            END IF;
            RETURN QUERY EXECUTE
                'SELECT t.id FROM public.tasks AS t'
                ' WHERE t.organization_id = $1'
                ' AND (t.title ILIKE $2 OR t.description ILIKE $2)'
                ' LIMIT $3'
                USING org, pattern, max_rows;
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SEARCH_FUNCTION}(text, integer) FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION {SEARCH_FUNCTION}(text, integer) TO "{APP_ROLE}"')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index("ix_tasks_search", table_name="tasks")
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SEARCH_FUNCTION}(text, integer)")
    op.execute("DROP INDEX IF EXISTS ix_tasks_search")
