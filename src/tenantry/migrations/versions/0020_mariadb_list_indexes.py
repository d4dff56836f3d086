"""MariaDB: the list/filter/sort indexes of projects and tasks without partial indexes.

PostgreSQL and SQLite index each list path partially, `WHERE deleted_at IS NULL`
(revision 0006). MariaDB ignores the predicate: there those indexes hold every row, and
a list had to read each entry's row to test `deleted_at` — a count of a big organization
scanned the table, and a deep cursor page walked every entry before it (docs/performance.md,
"MariaDB"). This revision replaces them, on MariaDB only, by `(organization_id,
deleted_at, <path columns>)` (`tenantry.core.indexes.list_indexes`): `deleted_at IS NULL`
is an equality on the index, the path's columns still give the order, and the counts of
the cross-project task lists find `project_id` (the trash filter) in the index.
No-op on PostgreSQL and SQLite.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

from tenantry.core.indexes import mariadb_columns

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, path columns, covering columns): the list paths of the two tables.
PATHS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("projects", ("created_at", "id"), ()),
    ("projects", ("updated_at", "id"), ()),
    ("projects", ("name", "id"), ()),
    ("projects", ("status", "created_at", "id"), ()),
    ("tasks", ("created_at", "id"), ("project_id",)),
    ("tasks", ("updated_at", "id"), ()),
    ("tasks", ("title", "id"), ()),
    ("tasks", ("due_date", "id"), ()),
    ("tasks", ("project_id", "created_at", "id"), ()),
    ("tasks", ("status", "created_at", "id"), ("project_id",)),
    ("tasks", ("assignee_id", "created_at", "id"), ("project_id",)),
)


def _suffix(columns: tuple[str, ...]) -> str:
    return "_".join(c.removesuffix("_id") for c in columns)


def upgrade() -> None:
    if op.get_bind().dialect.name != "mariadb":
        return
    # New ones first: the organization foreign key needs an index leading with its column.
    for table, columns, covering in PATHS:
        op.create_index(
            f"ix_{table}_md_{_suffix(columns)}",
            table,
            mariadb_columns(*columns, covering=covering),
        )
    for table, columns, _ in PATHS:
        op.drop_index(f"ix_{table}_live_{_suffix(columns)}", table_name=table)


def downgrade() -> None:
    if op.get_bind().dialect.name != "mariadb":
        return
    for table, columns, _ in PATHS:  # as revision 0006 made them (the predicate ignored)
        op.create_index(f"ix_{table}_live_{_suffix(columns)}", table, ["organization_id", *columns])
    for table, columns, _ in PATHS:
        op.drop_index(f"ix_{table}_md_{_suffix(columns)}", table_name=table)
