"""Index helpers for tenant tables: lead with `organization_id`, cover only live rows.

Every list, filter and sort path of a tenant resource is `WHERE organization_id = :org
AND deleted_at IS NULL ... ORDER BY <field>, id`. `live_index` builds exactly that
index: partial on `deleted_at IS NULL` (PostgreSQL and SQLite both support partial
indexes), so soft-deleted rows cost nothing in the hot indexes. `trash_index` serves the
`deleted=only` listings.

MariaDB has no partial indexes. `list_indexes` gives a list path both forms: the partial
index on PostgreSQL and SQLite, and on MariaDB `(organization_id, deleted_at, *columns)`
— `deleted_at IS NULL` is an equality on that index (a `ref` on NULL), so the columns
after it still give the page's order and a count reads the index alone (`covering`
columns are appended for what a count filters on besides). Each form exists only on its
dialects (`DialectIndex`, through `Index.ddl_if`); `exists_on` tells migrations' comparisons which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Index, Table, text
from sqlalchemy.schema import SchemaItem

_LIVE = text("deleted_at IS NULL")
_DELETED = text("deleted_at IS NOT NULL")


def live_index(table: str, *columns: str) -> Index:
    """`(organization_id, *columns)` over rows that are not soft-deleted."""
    name = f"ix_{table}_live_" + "_".join(c.removesuffix("_id") for c in columns)
    return Index(name, "organization_id", *columns, **_partial(_LIVE))


PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")


class DialectIndex(Index):
    """An index created only on `dialects` (the other form of a list path elsewhere)."""

    def __init__(self, name: str, *columns: str, dialects: tuple[str, ...], **kw: Any) -> None:
        super().__init__(name, *columns, **kw)
        self.dialects = dialects
        # SQLAlchemy takes a tuple of dialect names here (its annotation says only `str`).
        self.ddl_if(dialect=dialects)  # type: ignore[arg-type]


def list_indexes(table: str, *columns: str, covering: Iterable[str] = ()) -> tuple[Index, Index]:
    """The index of one list path: partial (PostgreSQL, SQLite) and its MariaDB form.

    MariaDB: `(organization_id, deleted_at, *columns, *covering)`, named `ix_<table>_md_...`.
    """
    suffix = "_".join(c.removesuffix("_id") for c in columns)
    partial = DialectIndex(
        f"ix_{table}_live_{suffix}",
        "organization_id",
        *columns,
        dialects=PARTIAL_INDEX_DIALECTS,
        **_partial(_LIVE),
    )
    mariadb_form = mariadb_columns(*columns, covering=covering)
    mariadb = DialectIndex(f"ix_{table}_md_{suffix}", *mariadb_form, dialects=("mariadb",))
    return partial, mariadb


def mariadb_columns(*columns: str, covering: Iterable[str] = ()) -> list[str]:
    """The columns of a list path's MariaDB index (`list_indexes`)."""
    return ["organization_id", "deleted_at", *columns, *covering]


def mariadb_list_index_names(table: Table) -> list[str]:
    """The MariaDB forms of `table`'s list indexes (`list_indexes`), by name."""
    return sorted(
        str(i.name)
        for i in table.indexes
        if isinstance(i, DialectIndex) and i.dialects == ("mariadb",) and i.name
    )


def exists_on(item: SchemaItem, dialect: str) -> bool:
    """Whether `item` is created on `dialect` (False for the other form of a list path)."""
    return not isinstance(item, DialectIndex) or dialect in item.dialects


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
