"""A database that is starting, stopping, overloaded or too slow answers 503, never 500
(issue 12, item 5): asyncpg's and asyncmy's operational errors, with `Retry-After`.

The tests through HTTP run on PostgreSQL and MariaDB alike (`make test-services`, `make
test-mariadb`): a statement past the statement timeout, a connection the server kills
mid-request, two requests that deadlock (the aborted one runs once more and succeeds),
a request whose lock wait times out twice (503)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from tenantry.core.errors import to_app_error
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tests.conftest import client_for

AppFactory = Callable[..., Awaitable[FastAPI]]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout"),
        asyncpg.exceptions.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        TimeoutError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_operational_driver_errors_map_to_503_with_retry_after(error: Exception) -> None:
    mapped = to_app_error(error)
    assert mapped is not None
    assert (mapped.status_code, mapped.code) == (503, "service_unavailable")
    assert int(mapped.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UndefinedTableError('relation "nope" does not exist'),
        asyncpg.exceptions.InterfaceError("another operation is in progress"),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_bugs_stay_500(error: Exception) -> None:
    assert to_app_error(error) is None


# --- a server that is starting up: a real asyncpg connection gets SQLSTATE 57P03 --------


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


async def _refuse_startup(
    sqlstate: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Speak just enough of the PostgreSQL protocol to refuse the startup message."""
    try:
        while True:
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            payload = await reader.readexactly(length - 4)
            if payload[:4] == struct.pack("!I", 80877103):  # SSLRequest: no TLS here
                writer.write(b"N")
                await writer.drain()
                continue
            writer.write(_error_response(sqlstate, "the database system is starting up"))
            await writer.drain()
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


@pytest.fixture
async def refusing_postgres(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    sqlstate = getattr(request, "param", "57P03")
    server = await asyncio.start_server(
        lambda r, w: _refuse_startup(sqlstate, r, w), "127.0.0.1", 0
    )
    async with server:
        yield int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize("refusing_postgres", ["57P03", "53300"], indirect=True)
async def test_a_database_that_refuses_connections_answers_503(
    build_app: AppFactory, refusing_postgres: int
) -> None:
    app = await build_app(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{refusing_postgres}/tenantry"
    )
    async with client_for(app) as client:
        response = await client.post(
            "/api/v1/auth/login", json={"email": "a@example.com", "password": "whatever-long"}
        )
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert "Traceback" not in response.text
    assert "57P03" not in response.text
    assert int(response.headers["retry-after"]) >= 1


# --- a server that is not there: asyncmy's connect error -------------------------------


async def test_a_mariadb_server_that_cannot_be_reached_answers_503(build_app: AppFactory) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()  # nothing listens on `port` any more
    app = await build_app(database_url=f"mariadb+asyncmy://root@127.0.0.1:{port}/tenantry")
    async with client_for(app) as client:
        response = await client.post(
            "/api/v1/auth/login", json={"email": "a@example.com", "password": "whatever-long"}
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "service_unavailable"
    assert int(response.headers["retry-after"]) >= 1


# --- statements through HTTP, on the server under test ---------------------------------


def _on_mariadb(connectable: AsyncSession | AsyncConnection) -> bool:
    if isinstance(connectable, AsyncSession):
        return connectable.get_bind().dialect.name == "mariadb"
    return connectable.dialect.name == "mariadb"


async def _sleep(session: AsyncSession, seconds: float) -> None:
    sql = "SELECT SLEEP(:s)" if _on_mariadb(session) else "SELECT pg_sleep(:s)"
    await session.execute(text(sql), {"s": seconds})


slow_router = APIRouter(route_class=UnitOfWorkRoute)


@slow_router.get("/api/v1/probe-slow")
async def slow(session: SessionDep) -> dict[str, str]:
    await _sleep(session, 5)
    return {"status": "done"}


@pytest.mark.services
async def test_a_statement_past_the_timeout_answers_503_with_retry_after(
    build_app: AppFactory,
) -> None:
    app = await build_app(database_statement_timeout_ms=200)
    app.include_router(slow_router)
    async with client_for(app) as client:
        response = await client.get("/api/v1/probe-slow")
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"
        assert "too long" in response.json()["message"]
        assert int(response.headers["retry-after"]) >= 1
        # The connection went back to the pool in a usable state.
        assert (await client.get("/health/ready")).status_code == 200


# --- the server closes the request's connection mid-statement: 503 ---------------------

gone_router = APIRouter(route_class=UnitOfWorkRoute)
_marks: dict[str, asyncio.Event] = {}


@gone_router.get("/api/v1/probe-gone/{run}")
async def sleep_until_killed(run: str, session: SessionDep) -> dict[str, str]:
    await session.execute(text("SELECT 1"))  # the connection is checked out from here
    _marks[run].set()
    await _sleep(session, 20)
    return {"status": "done"}


async def _kill_the_sleeping_connection(admin: AsyncConnection) -> int:
    if _on_mariadb(admin):
        sleeping = text(
            "SELECT ID FROM information_schema.PROCESSLIST"
            " WHERE DB = DATABASE() AND INFO LIKE 'SELECT SLEEP(%'"
        )
        kill = "KILL CONNECTION {}"
    else:
        sleeping = text(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(%'"
        )
        kill = "SELECT pg_terminate_backend({})"
    for _ in range(250):
        found = list(await admin.scalars(sleeping))
        await admin.rollback()  # PostgreSQL: a fresh activity snapshot each time
        if found:
            for victim in found:
                await admin.execute(text(kill.format(int(victim))))
            return len(found)
        await asyncio.sleep(0.02)
    return 0


@pytest.mark.services
async def test_a_connection_the_server_kills_mid_request_answers_503(
    build_app: AppFactory, database_url: str
) -> None:
    import uuid

    app = await build_app()
    app.include_router(gone_router)
    run = uuid.uuid4().hex
    _marks[run] = asyncio.Event()
    admin_engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with client_for(app) as client, admin_engine.connect() as admin:
            pending = asyncio.create_task(client.get(f"/api/v1/probe-gone/{run}"))
            await asyncio.wait_for(_marks[run].wait(), timeout=10)
            assert await _kill_the_sleeping_connection(admin) == 1
            response = await asyncio.wait_for(pending, timeout=15)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "service_unavailable"
            assert int(response.headers["retry-after"]) >= 1
            assert "Traceback" not in response.text
            # The pool replaced the dead connection.
            assert (await client.get("/health/ready")).status_code == 200
    finally:
        _marks.pop(run, None)
        await admin_engine.dispose()


# --- deadlocks and lock wait timeouts: the unit of work runs once more ------------------
#
# Each probe request locks rows of its own table with SELECT ... FOR UPDATE (a real row
# lock on both servers), in the order the path gives.

lock_router = APIRouter(route_class=UnitOfWorkRoute)


class LockProbe:
    """The rows two requests fight over, and how many times each request's body ran."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.both_hold_one = asyncio.Barrier(2)
        self.runs: dict[int, int] = {}


_probes: dict[str, LockProbe] = {}


async def _lock_row(session: AsyncSession, table: str, row: int) -> None:
    await session.execute(text(f"SELECT n FROM {table} WHERE id = :id FOR UPDATE"), {"id": row})


class ProbeBody(BaseModel):
    note: str


@lock_router.post("/api/v1/probe-deadlock/{run}/{first}/{second}")
async def lock_both(
    run: str, first: int, second: int, body: ProbeBody, session: SessionDep
) -> dict[str, int | str]:
    probe = _probes[run]
    probe.runs[first] = probe.runs.get(first, 0) + 1
    await _lock_row(session, probe.table, first)
    if probe.runs[first] == 1:  # each first run holds one row and wants the other's
        await probe.both_hold_one.wait()
    await _lock_row(session, probe.table, second)
    await session.execute(
        text(f"UPDATE {probe.table} SET n = n + 1 WHERE id = :id"), {"id": second}
    )
    return {"runs": probe.runs[first], "note": body.note}  # the retry read the body again


@lock_router.post("/api/v1/probe-lock-wait/{run}/{row}")
async def wait_for_row(run: str, row: int, session: SessionDep) -> dict[str, int]:
    probe = _probes[run]
    probe.runs[row] = probe.runs.get(row, 0) + 1
    if _on_mariadb(session):
        await session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
    else:
        await session.execute(text("SET LOCAL lock_timeout = '300ms'"))
    await _lock_row(session, probe.table, row)
    return {"runs": probe.runs[row]}


@pytest.fixture
async def lock_probe(database_url: str) -> AsyncIterator[tuple[LockProbe, str]]:
    import uuid

    run = uuid.uuid4().hex
    probe = LockProbe(f"probe_locks_{run[:12]}")
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {probe.table} (id INT PRIMARY KEY, n INT)"))
            await conn.execute(text(f"INSERT INTO {probe.table} VALUES (1, 0), (2, 0)"))
        _probes[run] = probe
        yield probe, run
    finally:
        _probes.pop(run, None)
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {probe.table}"))
        await engine.dispose()


@pytest.mark.services
async def test_a_deadlocked_request_runs_once_more_and_both_succeed(
    build_app: AppFactory, lock_probe: tuple[LockProbe, str], database_url: str
) -> None:
    probe, run = lock_probe
    app = await build_app()
    app.include_router(lock_router)
    async with client_for(app) as client:
        responses = await asyncio.wait_for(
            asyncio.gather(
                client.post(f"/api/v1/probe-deadlock/{run}/1/2", json={"note": "one"}),
                client.post(f"/api/v1/probe-deadlock/{run}/2/1", json={"note": "two"}),
            ),
            timeout=60,
        )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    # The database aborted one of them; that one ran twice, and only its second run and
    # the other request's one run were committed.
    assert sorted(r.json()["runs"] for r in responses) == [1, 2]
    assert [r.json()["note"] for r in responses] == ["one", "two"]
    assert sorted(probe.runs.values()) == [1, 2]
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT id, n FROM {probe.table} ORDER BY id"))).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in rows] == [(1, 1), (2, 1)]


@pytest.mark.services
async def test_a_lock_wait_that_times_out_twice_answers_503(
    build_app: AppFactory, lock_probe: tuple[LockProbe, str], database_url: str
) -> None:
    probe, run = lock_probe
    app = await build_app()
    app.include_router(lock_router)
    holder_engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with holder_engine.connect() as holder, client_for(app) as client:
            await holder.execute(text(f"UPDATE {probe.table} SET n = 7 WHERE id = 1"))
            response = await asyncio.wait_for(
                client.post(f"/api/v1/probe-lock-wait/{run}/1"), timeout=30
            )
            await holder.rollback()
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "service_unavailable"
            assert "send it again" in response.json()["message"]
            assert int(response.headers["retry-after"]) >= 1
            assert not any(code in response.json()["message"] for code in ("1205", "55P03"))
            assert "Traceback" not in response.text
            assert probe.runs == {1: 2}  # the first abort was retried, the second answered
            # Once the lock is free, the same request goes through at its first run.
            again = await client.post(f"/api/v1/probe-lock-wait/{run}/1")
            assert (again.status_code, again.json()) == (200, {"runs": 3})
    finally:
        await holder_engine.dispose()
