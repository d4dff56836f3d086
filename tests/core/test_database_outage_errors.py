"""A database that is starting, stopping, overloaded or too slow answers 503, never 500
(issue 12, item 5): asyncpg's operational errors, with `Retry-After`."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

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


# --- a statement that runs past statement_timeout, through HTTP --------------------------

slow_router = APIRouter(route_class=UnitOfWorkRoute)


@slow_router.get("/api/v1/probe-slow")
async def slow(session: SessionDep) -> dict[str, str]:
    await session.execute(text("SELECT pg_sleep(5)"))
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


# --- a deadlock between two requests: the one PostgreSQL aborts answers 503 --------------

deadlock_router = APIRouter(route_class=UnitOfWorkRoute)
_both_hold_one: dict[str, asyncio.Barrier] = {}


@deadlock_router.post("/api/v1/probe-deadlock/{run}/{first}/{second}")
async def lock_both(run: str, first: int, second: int, session: SessionDep) -> dict[str, str]:
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": first})
    await _both_hold_one[run].wait()  # each request holds one lock and wants the other's
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": second})
    return {"status": "locked"}


@pytest.mark.services
async def test_a_deadlock_answers_503_for_the_aborted_request_and_nothing_else(
    build_app: AppFactory,
) -> None:
    import random
    import uuid

    app = await build_app()
    app.include_router(deadlock_router)
    run = uuid.uuid4().hex
    _both_hold_one[run] = asyncio.Barrier(2)
    a, b = random.sample(range(1 << 40, 1 << 41), 2)  # advisory keys no other test uses
    try:
        async with client_for(app) as client:
            responses = await asyncio.wait_for(
                asyncio.gather(
                    client.post(f"/api/v1/probe-deadlock/{run}/{a}/{b}"),
                    client.post(f"/api/v1/probe-deadlock/{run}/{b}/{a}"),
                ),
                timeout=30,
            )
    finally:
        _both_hold_one.pop(run, None)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 503], [response.text for response in responses]
    aborted = next(response for response in responses if response.status_code == 503)
    assert aborted.json()["code"] == "service_unavailable"
    assert "send it again" in aborted.json()["message"]
    assert int(aborted.headers["retry-after"]) >= 1
    assert "40P01" not in aborted.text
    assert "Traceback" not in aborted.text
