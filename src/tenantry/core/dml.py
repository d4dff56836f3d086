"""Data-changing statements written once for every dialect: `UPDATE ... RETURNING`, upserts,
inserts that skip a duplicate.

PostgreSQL and SQLite run the statement as it is. MariaDB has no `UPDATE ... RETURNING`
(only INSERT and DELETE return rows), so there the same change is three statements in the
caller's transaction: find the matching rows, lock them by primary key (`SELECT id ...
FOR UPDATE`, `SKIP LOCKED` when asked, the conditions checked again under the lock),
update exactly those by primary key, then read the asked columns back. The
row locks are held until the transaction ends, so no concurrent writer can change a row
between the three statements: the caller sees what RETURNING would have returned (the
values after the update), and two concurrent callers never both get the same row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Result, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

MARIADB_DUPLICATE_KEY = 1062
# MariaDB claims (`skip_locked`) read this many candidates per wanted row, so rows another
# worker is claiming at the same moment leave enough for this one.
CANDIDATES_PER_CLAIM = 4


async def update_returning(
    session: AsyncSession,
    model: Any,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    returning: Sequence[Any],
    *,
    order_by: Sequence[Any] = (),
    limit: int | None = None,
    skip_locked: bool = False,
    by_key: bool = False,
) -> Result[Any]:
    """`UPDATE model SET values WHERE where RETURNING returning`, as a `Result`.

    `order_by`/`limit` pick which matching rows are changed (the oldest first, at most
    `limit`); `skip_locked` passes over rows another transaction holds (job claiming).
    """
    if session.get_bind().dialect.update_returning:
        if limit is None:
            statement = update(model).where(*where)
        else:
            picked = select(model.id).where(*where).order_by(*order_by).limit(limit)
            if skip_locked:
                # A CTE is evaluated once; `IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`
                # may be re-run by the planner and change more than `n` rows.
                due = picked.with_for_update(skip_locked=True).cte("picked")
                statement = update(model).where(model.id == due.c.id, *where)
            else:
                statement = update(model).where(model.id.in_(picked.scalar_subquery()), *where)
        return await session.execute(
            statement.values(**values)
            .returning(*returning)
            .execution_options(synchronize_session=False)
        )
    if by_key:
        locking = select(model.id).where(*where).with_for_update(skip_locked=skip_locked)
        ids = list((await session.scalars(locking)).all())
    else:
        ids = await _lock_by_key(session, model, where, order_by, limit, skip_locked)
    await _update_keys(session, model, ids, values)
    return await session.execute(
        select(*returning).where(model.id.in_(ids)).execution_options(populate_existing=True)
    )


async def update_where(
    session: AsyncSession,
    model: Any,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
) -> None:
    """`UPDATE model SET values WHERE where`; on MariaDB through primary-key locks.

    On MariaDB a plain UPDATE whose WHERE is served by a secondary index locks that
    index's entries before the rows, the reverse of an update by primary key, and the two
    deadlock (seen between the job sweeper and a job finishing); see `_lock_by_key`.
    """
    if session.get_bind().dialect.update_returning:
        await session.execute(
            update(model)
            .where(*where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return
    ids = await _lock_by_key(session, model, where, (), None, False)
    await _update_keys(session, model, ids, values)


async def _lock_by_key(
    session: AsyncSession,
    model: Any,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    limit: int | None,
    skip_locked: bool,
) -> list[Any]:
    """The primary keys of the rows matching `where`, locked (MariaDB).

    Candidates by a plain read, then locked by primary key with the conditions checked
    again under the lock: a locking read or an UPDATE through a secondary index (say
    `status`) locks its entries, which the UPDATE of a concurrent holder of the row must
    change, and InnoDB reports a deadlock. Here locks are only taken on primary-key
    records.
    """
    candidates = select(model.id).where(*where).order_by(*order_by)
    if limit is not None:
        candidates = candidates.limit(limit * CANDIDATES_PER_CLAIM if skip_locked else limit)
    seen = list((await session.scalars(candidates)).all())
    if not seen:
        return []
    pick = select(model.id).where(model.id.in_(seen), *where).order_by(*order_by)
    if limit is not None:
        pick = pick.limit(limit)
    return list((await session.scalars(pick.with_for_update(skip_locked=skip_locked))).all())


async def _update_keys(
    session: AsyncSession, model: Any, ids: Sequence[Any], values: Mapping[str, Any]
) -> None:
    if ids:
        await session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def upsert(
    session: AsyncSession,
    table: Any,
    index_elements: Sequence[Any],
    changes: Callable[[Any], Mapping[str, Any]],
) -> Any:
    """`INSERT ... ON CONFLICT (index_elements) DO UPDATE SET changes(excluded)`.

    `changes` receives the row that was not inserted (`excluded` on PostgreSQL and SQLite,
    `VALUES(...)` on MariaDB, whose `ON DUPLICATE KEY UPDATE` fires on any unique key:
    `index_elements` must be the table's only unique key besides a generated primary key).
    Add the rows with `.values(...)` or as the parameters of `execute`.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "mariadb":
        statement: Any = mysql.insert(table)
        return statement.on_duplicate_key_update(**changes(statement.inserted))
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(index_elements), set_=dict(changes(statement.excluded))
    )


async def insert_unless_duplicate(
    session: AsyncSession, model: Any, values: Mapping[str, Any], index_elements: Sequence[str]
) -> bool:
    """Insert one row unless one with the same `index_elements` exists; True if inserted.

    MariaDB has no `ON CONFLICT DO NOTHING` (`INSERT IGNORE` would also hide every other
    error), so there the insert runs in a savepoint and a duplicate key (1062) rolls back
    only that savepoint.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "mariadb":
        try:
            async with session.begin_nested():
                await session.execute(insert(model).values(**values))
        except IntegrityError as error:
            if getattr(error.orig, "args", (None,))[0] != MARIADB_DUPLICATE_KEY:
                raise
            return False
        return True
    dialect_insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(index_elements))
        .returning(model.id)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None
