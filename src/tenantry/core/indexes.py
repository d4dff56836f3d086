"""Index helpers for tenant tables: lead with `organization_id`, cover only live rows.

Every list, filter and sort path of a tenant resource is `WHERE organization_id = :org
AND deleted_at IS NULL ... ORDER BY <field>, id`. `live_index` builds exactly that
index: partial on `deleted_at IS NULL` (PostgreSQL and SQLite both support partial
indexes), so soft-deleted rows cost nothing in the hot indexes. `trash_index` serves the
`deleted=only` listings.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, text

_LIVE = text("deleted_at IS NULL")
_DELETED = text("deleted_at IS NOT NULL")


def live_index(table: str, *columns: str) -> Index:
    """`(organization_id, *columns)` over rows that are not soft-deleted."""
    name = f"ix_{table}_live_" + "_".join(c.removesuffix("_id") for c in columns)
    return Index(name, "organization_id", *columns, **_partial(_LIVE))


def trash_index(table: str) -> Index:
    """`(organization_id, deleted_at, id)` over soft-deleted rows (the trash listing)."""
    return Index(f"ix_{table}_trash", "organization_id", "deleted_at", "id", **_partial(_DELETED))


# MariaDB indexes a TEXT column by a prefix (characters); VARCHARs whole.
SEARCH_PREFIX_LENGTHS = {"description": 255}


def _partial(condition: Any) -> dict[str, Any]:
    return {"postgresql_where": condition, "sqlite_where": condition}


def trigram_search_index(table: str, *columns: str) -> Index:
    """GIN `(organization_id, column gin_trgm_ops, ...)`: substring search (PostgreSQL).

    SQLite has no trigram index (its `LIKE` scans): there the index exists, for the
    schema to match the models on both backends, but holds no row (`WHERE 0`). MariaDB
    has none either: there it is a plain B-tree on `(organization_id, title,
    description(255))`, so a search scans one organization's index entries, not the table
    (a TEXT column is indexed by a prefix; the row is read for longer descriptions).
    """
    return Index(
        f"ix_{table}_search",
        "organization_id",
        *columns,
        postgresql_using="gin",
        postgresql_ops=dict.fromkeys(columns, "gin_trgm_ops"),
        sqlite_where=text("0"),
        mariadb_length=SEARCH_PREFIX_LENGTHS,
    )
