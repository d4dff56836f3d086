"""Fixtures for job tests: a database handle and workers stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.jobs import EmbeddedTransport, Worker, bind_transport


@pytest.fixture
async def make_database(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Database]]:
    """Independent `Database` objects (as separate processes would have), disposed after."""
    made: list[Database] = []

    def factory(**overrides: Any) -> Database:
        database = Database(make_settings(**overrides))
        made.append(database)
        return database

    yield factory
    for database in made:
        await database.dispose()


@pytest.fixture
async def database(make_database: Callable[..., Database]) -> Database:
    return make_database()


@pytest.fixture
async def make_worker(
    make_database: Callable[..., Database],
) -> AsyncIterator[Callable[..., Worker]]:
    """Workers on the embedded transport, each with its own engine; stopped after the test."""
    workers: list[Worker] = []

    def factory(
        *, settings: dict[str, Any] | None = None, database: Database | None = None, **kw: Any
    ) -> Worker:
        db = database or make_database(**(settings or {}))
        transport = EmbeddedTransport()
        bind_transport(db, transport)
        worker = Worker(db, db.settings, transport, **kw)
        workers.append(worker)
        return worker

    yield factory
    for worker in workers:
        await worker.stop(grace_seconds=0)
