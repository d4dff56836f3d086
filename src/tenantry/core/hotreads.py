"""Hot reads: a get-by-id in one round trip, without the ORM, validated once.

The read path every tenant resource serves most (`GET .../{id}`) is a `ScopedRead`
(`core/tenancy.scoped_select`: the organization and `deleted_at IS NULL` criteria come
from there, nowhere else) run by `fetch_one`:

- on PostgreSQL, when the request's session has no transaction open, on a pooled
  connection *outside* a transaction (no BEGIN/COMMIT for a single read), as the raw
  asyncpg prepared statement compiled once per process; the connection's `app.org_id`
  is made the request's organization first — a statement only when the connection held
  another value (core/db.py tracks it) — so row-level security still applies;
- otherwise (SQLite, or a session already in a transaction) through the session's
  connection, as a cached Core statement: same SQL, same scope.

The row goes to the response schema once (`envelope_response`: one validation, then
straight to JSON), instead of ORM object → schema → FastAPI's second validation.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

from pydantic import BaseModel
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from starlette.responses import Response

from tenantry.core.concurrency import etag
from tenantry.core.db import (
    ORG_SETTING_SQL,
    forget_org_setting,
    held_org_setting,
    mark_org_setting_claimed,
    mark_org_setting_sent,
)
from tenantry.core.metrics import DatabaseTime
from tenantry.core.responses import Envelope
from tenantry.core.tenancy import SCOPE_ORG_PARAM, ScopedRead, require_tenant
from tenantry.core.tenantdb import Home, home_of, routing_of

Row = dict[str, Any]


class HotRead:
    """A `ScopedRead` with its PostgreSQL SQL and parameter order, compiled on first use."""

    __slots__ = ("_compiled", "read")

    def __init__(self, read: ScopedRead) -> None:
        if not isinstance(read, ScopedRead):
            raise TypeError("a hot read is built with core.tenancy.scoped_select")
        self.read = read
        self._compiled: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    def postgres_sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        sql, names, _literals = self._postgres(dialect)
        return sql, names

    def postgres_args(self, dialect: Dialect, values: dict[str, Any]) -> tuple[Any, ...]:
        """The positional arguments: the caller's values, then the statement's literals."""
        _sql, names, literals = self._postgres(dialect)
        return tuple(values[name] if name in values else literals[name] for name in names)

    def _postgres(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        if self._compiled is None:
            compiled = self.read.statement.compile(dialect=dialect)
            names = tuple(compiled.positiontup or ())
            if SCOPE_ORG_PARAM not in names:  # scoped_select always puts it there
                raise RuntimeError("a hot read without the organization criteria")
            literals = {
                name: bind.effective_value
                for name, bind in ((n, compiled.binds[n]) for n in names)
                if not bind.required
            }
            self._compiled = (str(compiled), names, literals)
        return self._compiled


async def fetch_one(session: AsyncSession, read: HotRead, **params: Any) -> Row | None:
    """The one row `read` finds in the session's bound organization, or None."""
    organization_id = require_tenant(session).organization_id
    values = {**params, SCOPE_ORG_PARAM: organization_id}
    routing = routing_of(session)
    model = read.read.model
    engine: Any = session.bind
    if routing is not None and model is not None and home_of(model) is not Home.CONTROL:
        engine = await routing.engine_of(organization_id)  # the organization's own database
    if (
        isinstance(engine, AsyncEngine)
        and engine.dialect.name == "postgresql"
        and not session.in_transaction()
    ):
        return await _fetch_outside_transaction(engine, read, organization_id, values)
    connection = await session.connection(bind_arguments={"mapper": model})
    row = (await connection.execute(read.read.statement, values)).mappings().first()
    return dict(row) if row is not None else None


async def _fetch_outside_transaction(
    engine: AsyncEngine, read: HotRead, organization_id: uuid.UUID, values: dict[str, Any]
) -> Row | None:
    organization = str(organization_id)
    sql, _names = read.postgres_sql(engine.dialect)
    args = read.postgres_args(engine.dialect, values)
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        adapted: Any = raw.dbapi_connection
        driver: Any = raw.driver_connection
        info = connection.info
        try:
            with DatabaseTime():  # the raw driver bypasses the engine's statement events
                if held_org_setting(info) != organization:
                    forget_org_setting(info)  # unknown until the statement went through
                    await driver.fetchval(ORG_SETTING_SQL, organization)
                    mark_org_setting_sent(info, organization)
                else:
                    mark_org_setting_claimed(info)
                record = await driver.fetchrow(sql, *args)
        except Exception as error:
            await _raise_as_sqlalchemy(connection, adapted, driver, sql, error)
    return dict(record.items()) if record is not None else None


async def _raise_as_sqlalchemy(
    connection: AsyncConnection, adapted: Any, driver: Any, sql: str, error: Exception
) -> NoReturn:
    """The driver's error as SQLAlchemy raises it on the ORM path (so core/errors.py
    answers the same 503 for an outage or a timeout), the connection dropped if closed."""
    closed = bool(driver.is_closed())
    if closed:
        await connection.invalidate()
    try:
        adapted._handle_exception(error)  # raises the DBAPI-shaped error, cause = error
    except Exception as translated:
        dbapi_error = connection.dialect.loaded_dbapi.Error
        raise DBAPIError.instance(
            sql, None, translated, dbapi_error, connection_invalidated=closed
        ) from error
    raise error  # pragma: no cover - _handle_exception always raises


def envelope_response(
    schema: type[BaseModel], row: Mapping[str, Any], *, version: int | None = None
) -> Response:
    """`{"success": true, "data": ..., "timestamp": ...}` from a row, validated once.

    The bytes are those FastAPI renders for the same `Envelope[schema]` (compact JSON,
    UTF-8, camelCase); `version` becomes the `ETag` header.
    """
    body = Envelope[schema](data=schema.model_validate(row))  # type: ignore[valid-type]
    return model_response(body, headers={"ETag": etag(version)} if version is not None else None)


def model_response(body: BaseModel, *, headers: dict[str, str] | None = None) -> Response:
    """A response model already validated (e.g. a list page): JSON, without FastAPI's
    second validation. Declare `response_model=` on the route for the OpenAPI schema."""
    return Response(
        body.model_dump_json(by_alias=True), media_type="application/json", headers=headers
    )
