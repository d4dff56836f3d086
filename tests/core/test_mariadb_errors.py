"""MariaDB's errors map like PostgreSQL's (issue 18): a duplicate key → 409, a missing or
still-referenced parent → 400, a lock wait timeout or deadlock → 503 with `Retry-After`
(the transaction was rolled back: sending it again is safe), a server gone → 503.

The mapping tests build asyncmy's own exceptions, as SQLAlchemy wraps them, and run on
every backend; the last test makes a real MariaDB server time out a lock wait and runs
under `make test-mariadb` only."""

from __future__ import annotations

import uuid

import pytest
from asyncmy import errors as asyncmy_errors
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.core.errors import to_app_error
from tests.conftest import USES_MARIADB

WRAPPERS: dict[type[Exception], type[sa_exc.DBAPIError]] = {
    asyncmy_errors.IntegrityError: sa_exc.IntegrityError,
    asyncmy_errors.OperationalError: sa_exc.OperationalError,
    asyncmy_errors.ProgrammingError: sa_exc.ProgrammingError,
    asyncmy_errors.InternalError: sa_exc.InternalError,
}


def _wrapped(error_class: type[Exception], code: int, message: str) -> sa_exc.DBAPIError:
    orig = error_class(code, message)
    return WRAPPERS[error_class]("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error_class", "code", "status"),
    [
        (asyncmy_errors.IntegrityError, 1062, 409),  # duplicate entry for key
        (asyncmy_errors.IntegrityError, 1452, 400),  # cannot add a child row: no parent
        (asyncmy_errors.IntegrityError, 1451, 400),  # cannot delete a referenced parent
        (asyncmy_errors.IntegrityError, 4025, 400),  # CHECK constraint failed
        (asyncmy_errors.OperationalError, 1205, 503),  # lock wait timeout exceeded
        (asyncmy_errors.OperationalError, 1213, 503),  # deadlock found
        (asyncmy_errors.InternalError, 1969, 503),  # max_statement_time exceeded
        (asyncmy_errors.OperationalError, 2006, 503),  # server has gone away
        (asyncmy_errors.OperationalError, 2013, 503),  # lost connection during query
        (asyncmy_errors.OperationalError, 2003, 503),  # cannot connect
        (asyncmy_errors.OperationalError, 1040, 503),  # too many connections
    ],
)
def test_mariadb_errors_map_like_postgresql(
    error_class: type[Exception], code: int, status: int
) -> None:
    mapped = to_app_error(_wrapped(error_class, code, "message"))
    assert mapped is not None
    assert mapped.status_code == status
    if status == 503:
        assert int(mapped.headers["Retry-After"]) >= 1
    if status == 400:
        assert mapped.code == "validation_error"


def test_mariadb_duplicate_key_is_a_conflict() -> None:
    mapped = to_app_error(
        _wrapped(asyncmy_errors.IntegrityError, 1062, "Duplicate entry 'x' for key 'uq'")
    )
    assert mapped is not None
    assert (mapped.status_code, mapped.code) == (409, "conflict")


def test_an_unwrapped_mariadb_connect_failure_is_503() -> None:
    mapped = to_app_error(asyncmy_errors.OperationalError(2003, "Can't connect"))
    assert mapped is not None
    assert mapped.status_code == 503


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (asyncmy_errors.ProgrammingError, 1146),  # table does not exist: a bug
        (asyncmy_errors.ProgrammingError, 1064),  # SQL syntax: a bug
        (asyncmy_errors.OperationalError, 1054),  # unknown column: a bug
    ],
)
def test_mariadb_bugs_stay_500(error_class: type[Exception], code: int) -> None:
    assert to_app_error(_wrapped(error_class, code, "message")) is None


@pytest.mark.skipif(not USES_MARIADB, reason="needs MariaDB: run `make test-mariadb`")
async def test_a_real_lock_wait_timeout_maps_to_503(database_url: str) -> None:
    table = f"lock_probe_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(database_url, pool_size=2)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT)"))
            await conn.execute(text(f"INSERT INTO {table} VALUES (1, 0)"))
        async with engine.connect() as holder, engine.connect() as waiter:
            await holder.execute(text(f"UPDATE {table} SET n = 1 WHERE id = 1"))
            await waiter.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            with pytest.raises(sa_exc.DBAPIError) as caught:
                await waiter.execute(text(f"UPDATE {table} SET n = 2 WHERE id = 1"))
            await holder.rollback()
        mapped = to_app_error(caught.value)
        assert mapped is not None
        assert mapped.status_code == 503
        assert mapped.headers["Retry-After"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()
