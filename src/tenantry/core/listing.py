"""List queries of tenant resources: sort allow-lists, offset pages, keyset pages, search.

A resource names its sortable fields once (`SortKey`s, camelCase as clients send them)
and hands its filtered statement to `offset_page` or `keyset_page`. Every page is
ordered by `(sort field, id)`, so equal sort values still have one total order:

- `offset_page`: `LIMIT/OFFSET` + one `COUNT` (the `meta.total` of API.md), the count
  cached per organization until its next write (core/counts.py); no deeper than
  `MAX_OFFSET_ROWS` (`ListQuery` refuses it); a search's count stops at
  `SEARCH_COUNT_CAP` (`meta.totalIsEstimate` beyond);
- `keyset_page`: `WHERE (field, id) after the cursor ORDER BY field, id LIMIT n + 1`,
  no count; with an index on `(organization_id, field, id)` the cost is the same at
  page 1 and page 10,000, and every row appears exactly once even while rows are added.

NULLs (optional fields such as a due date) sort as the greatest value in both
directions (PostgreSQL's own default, so one B-tree serves `asc` and `desc`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from tenantry.core.counts import cached_total
from tenantry.core.errors import ValidationFailed
from tenantry.core.indexes import mariadb_list_index_names
from tenantry.core.responses import (
    CursorPage,
    ListQuery,
    Page,
    cursor_page,
    decode_cursor,
    encode_cursor,
    page,
)

M = TypeVar("M")
S = TypeVar("S", bound=BaseModel)


def parse_datetime(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment


@dataclass(frozen=True, slots=True)
class SortKey:
    """A sortable field: its API name, its column, how a cursor value is read back."""

    name: str
    column: InstrumentedAttribute[Any]
    parse: Callable[[str], Any] = str
    nullable: bool = False


def created_at_key(column: InstrumentedAttribute[Any]) -> SortKey:
    return SortKey("createdAt", column, parse_datetime)


def updated_at_key(column: InstrumentedAttribute[Any]) -> SortKey:
    return SortKey("updatedAt", column, parse_datetime)


def search_condition(term: str | None, *columns: InstrumentedAttribute[Any]) -> list[Any]:
    """Case-insensitive substring match on any of `columns` (`%` and `_` taken literally)."""
    if not term:
        return []
    return [or_(*(column.icontains(term, autoescape=True) for column in columns))]


def like_pattern(term: str) -> str:
    """`%term%` for `LIKE`/`ILIKE` with the default backslash escape (`%`, `_` literal)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _order(
    key: SortKey,
    id_column: InstrumentedAttribute[Any],
    descending: bool,
    dialect: str = "",
) -> list[Any]:
    """NULLs sort greatest: last ascending, first descending, on every dialect."""
    column: Any = key.column.desc() if descending else key.column.asc()
    nulls: list[Any] = []
    if key.nullable and dialect == "mariadb":
        # No `NULLS LAST` on MariaDB (NULLs sort least there): sort on `IS NULL` first.
        is_null = key.column.is_(None)
        nulls = [is_null.desc() if descending else is_null.asc()]
    elif key.nullable:
        column = column.nulls_first() if descending else column.nulls_last()
    return [*nulls, column, id_column.desc() if descending else id_column.asc()]


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def offset_page(
    session: AsyncSession,
    statement: Select[M],
    *,
    key: SortKey,
    id_column: InstrumentedAttribute[Any],
    descending: bool,
    offset: int,
    limit: int,
    count_cap: int | None = None,
) -> tuple[list[M], int]:
    """One page by offset and the total count (cached per organization: core/counts.py).

    With `count_cap`, the count stops at `count_cap + 1` rows (a total above the cap is
    returned as `count_cap + 1`: the caller says it is an estimate).
    """
    counting = _counting(statement, count_cap)

    async def count() -> int:
        return int(await session.scalar(counting) or 0)

    total = await cached_total(session, counting, count)
    rows = await session.scalars(
        statement.order_by(*_order(key, id_column, descending, _dialect(session)))
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total


def _counting(statement: Select[Any], cap: int | None) -> Select[Any]:
    if cap is None:
        return statement.with_only_columns(func.count(), maintain_column_froms=True).order_by(None)
    capped = statement.with_only_columns(literal(1), maintain_column_froms=True)
    return select(func.count()).select_from(capped.order_by(None).limit(cap + 1).subquery())


async def keyset_page(
    session: AsyncSession,
    statement: Select[M],
    *,
    key: SortKey,
    id_column: InstrumentedAttribute[Any],
    descending: bool,
    cursor: str,
    limit: int,
) -> tuple[list[M], str | None]:
    """One keyset page after `cursor` (empty: the first page) and the next cursor.

    The position test is a row-value comparison, `(field, id) < (:field, :id)`, which
    PostgreSQL turns into an index range start: the cost does not grow with the depth.
    A nullable field's NULL block is its own segment (`field IS NULL AND id > :id`),
    read only when the page reaches it: at most two statements per page.
    """
    dialect = _dialect(session)
    order = _order(key, id_column, descending, dialect)
    segments = [statement]
    if key.nullable and dialect == "mariadb":
        # No `NULLS LAST`: every segment holds NULLs only or none, in the index's order.
        order = [c.desc() if descending else c.asc() for c in (key.column, id_column)]
        if not cursor:
            blocks = [key.column.is_(None), key.column.is_not(None)]
            segments = [statement.where(c) for c in (blocks if descending else blocks[::-1])]
    if cursor:
        value, last_id = _read_cursor(cursor, key, descending)
        segments = [
            statement.where(*c)
            for c in _segments(key, id_column, descending, value, last_id, dialect)
        ]
    rows: list[M] = []
    for segment in segments:
        rows += await session.scalars(segment.order_by(*order).limit(limit + 1 - len(rows)))
        if len(rows) > limit:
            break
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _write_cursor(key, descending, last, id_column)


def _segments(
    key: SortKey,
    id_column: InstrumentedAttribute[Any],
    descending: bool,
    value: Any,
    last_id: uuid.UUID,
    dialect: str = "",
) -> list[list[ColumnElement[bool]]]:
    """The conditions of each segment after the cursor, in page order (NULLs sort greatest).

    MariaDB's range optimizer does not start a range at a row value: there the segment
    also says `field <= :field` (`>=` ascending), which it does, so a deep page reads
    the page's rows, not every index entry before them.
    """
    column = key.column
    if value is None:  # inside the NULL block: last when ascending, first when descending
        beyond_id = id_column < last_id if descending else id_column > last_id
        rest: list[list[ColumnElement[bool]]] = [[column.is_not(None)]] if descending else []
        return [[and_(column.is_(None), beyond_id)], *rest]
    position = tuple_(column, id_column)
    after: list[ColumnElement[bool]] = [
        position < (value, last_id) if descending else position > (value, last_id)
    ]
    if dialect == "mariadb":
        after.append(column <= value if descending else column >= value)
    # A comparison with NULL is never true: the NULL block is a segment of its own.
    nulls: list[list[ColumnElement[bool]]] = (
        [[column.is_(None)]] if key.nullable and not descending else []
    )
    return [after, *nulls]


def _write_cursor(
    key: SortKey, descending: bool, row: Any, id_column: InstrumentedAttribute[Any]
) -> str:
    value = getattr(row, key.column.key)
    shown = "" if value is None else value.isoformat() if hasattr(value, "isoformat") else value
    order = "desc" if descending else "asc"
    null = "1" if value is None else "0"
    return encode_cursor([key.name, order, null, shown, getattr(row, id_column.key)])


def _read_cursor(cursor: str, key: SortKey, descending: bool) -> tuple[Any, uuid.UUID]:
    name, order, null, value, last_id = decode_cursor(cursor, 5)
    if name != key.name or order != ("desc" if descending else "asc"):
        raise ValidationFailed(
            details=[{"field": "cursor", "message": "The cursor belongs to another sort order"}]
        )
    try:
        parsed = None if null == "1" else key.parse(value)
        return parsed, uuid.UUID(last_id)
    except ValueError:
        raise ValidationFailed(details=[{"field": "cursor", "message": "Invalid cursor"}]) from None


def sort_key(keys: Sequence[SortKey], name: str) -> SortKey:
    """The `SortKey` called `name` (the query model has validated it against the list)."""
    for key in keys:
        if key.name == name:
            return key
    raise ValidationFailed(details=[{"field": "sortBy", "message": "Unknown sort field"}])


@dataclass(frozen=True, slots=True)
class Listing(Generic[M]):
    """One page of rows, as `list_rows` fetched it (offset: with a total; keyset: a cursor)."""

    rows: list[M]
    limit: int
    uses_cursor: bool
    page: int = 1
    total: int = 0
    next_cursor: str | None = None
    total_is_estimate: bool = False

    def as_page(self, schema: type[S]) -> Page[S] | CursorPage[S]:
        """The response: `Page` (offset) or `CursorPage` (keyset) of `schema` items."""
        items = [schema.model_validate(row) for row in self.rows]
        if self.uses_cursor:
            return cursor_page(items, limit=self.limit, next_cursor=self.next_cursor)
        return page(
            items,
            total=self.total,
            page=self.page,
            limit=self.limit,
            total_is_estimate=self.total_is_estimate,
        )


_WALK_SORT_INDEX = text(
    "SELECT set_config('enable_sort', 'off', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)


async def _walk_sort_index(session: AsyncSession) -> None:
    """Make PostgreSQL walk the sort index for a search page (this transaction only).

    A substring match is estimated to hit almost nothing, so the planner would filter
    every row of the organization and sort the hits. Walking the `(organization_id,
    field, id)` index in page order stops after the page's rows; for a common term that
    is a few hundred rows instead of all of them. Every sort key has such an index. No
    parallel workers either: starting them costs more than such a walk.
    """
    await session.execute(_WALK_SORT_INDEX)


def _order_by_list_index(statement: Select[M], id_column: InstrumentedAttribute[Any]) -> Select[M]:
    """MariaDB: sort pages with one of the table's list indexes, through a range.

    MariaDB 10.11 walks a descending page from the start of the organization's index
    entries (`ref` on the equality prefix) instead of starting at the cursor's position
    (`range`): a cursor page 150,000 rows deep read 150,000 rows (1.4 s). `FORCE INDEX
    FOR ORDER BY (<the list indexes>)` keeps the optimizer's choice among the table's list
    indexes (core/indexes.py) and makes it use the range (docs/performance.md, "MariaDB").
    """
    entity = id_column.class_
    names = mariadb_list_index_names(entity.__table__)
    if not names:
        return statement
    hint = f"FORCE INDEX FOR ORDER BY ({', '.join(names)})"
    return statement.with_hint(entity, hint, dialect_name="mariadb")


async def list_rows(
    session: AsyncSession,
    statement: Select[M],
    *,
    keys: Sequence[SortKey],
    id_column: InstrumentedAttribute[Any],
    query: ListQuery,
    search_by_index: bool = False,
) -> Listing[M]:
    """The page `query` asks for: keyset when it carries a `cursor`, offset otherwise.

    A search's total is counted up to `ListQuery.search_count_cap` (`SEARCH_COUNT_CAP`)
    matches; beyond, it is the cap and the page says `totalIsEstimate`. With
    `search_by_index` the caller has already narrowed `statement` to the ids an index
    found (tasks/queries.py): the planner then picks its own plan.
    """
    key = sort_key(keys, query.sort_by)
    descending = query.sort_order == "desc"
    searching = bool(query.search)
    if session.get_bind().dialect.name == "mariadb":
        statement = _order_by_list_index(statement, id_column)
    if searching and not search_by_index and session.get_bind().dialect.name == "postgresql":
        await _walk_sort_index(session)
    if query.cursor is not None:
        rows, next_cursor = await keyset_page(
            session,
            statement,
            key=key,
            id_column=id_column,
            descending=descending,
            cursor=query.cursor,
            limit=query.limit,
        )
        return Listing(rows, query.limit, uses_cursor=True, next_cursor=next_cursor)
    cap = query.search_count_cap if searching else None
    rows, total = await offset_page(
        session,
        statement,
        key=key,
        id_column=id_column,
        descending=descending,
        offset=query.offset,
        limit=query.limit,
        count_cap=cap,
    )
    estimate = cap is not None and total > cap
    return Listing(
        rows,
        query.limit,
        uses_cursor=False,
        page=query.page,
        total=cap if cap is not None and estimate else total,
        total_is_estimate=estimate,
    )
