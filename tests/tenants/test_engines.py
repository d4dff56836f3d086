"""Tenant engines: bounded per server by the connection budget, idle ones closed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from tenantry.config import Settings
from tenantry.core.errors import TenantUnavailable
from tenantry.core.tenantdb import TenantEngines, TenantLocation


def _location(directory: Path, server: str = "s1") -> TenantLocation:
    name = f"tenant_{uuid.uuid4().hex}"
    return TenantLocation(
        organization_id=uuid.uuid4(),
        server=server,
        database=name,
        url=f"sqlite+aiosqlite:///{directory / name}.db",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engines_settings(make_settings: Callable[..., Settings]) -> Settings:
    # 2 connections per server, 1 per tenant database: at most 2 tenant engines per server.
    return make_settings(
        tenancy_mode="database",
        tenant_database_pool_size=1,
        tenant_database_connection_budget=2,
        tenant_engine_idle_seconds=60,
    )


async def test_the_budget_closes_the_least_recently_used_idle_engine(
    engines_settings: Settings, tmp_path: Path
) -> None:
    engines = TenantEngines(engines_settings, clock=Clock())
    one, two, three = (_location(tmp_path) for _ in range(3))
    try:
        first = engines.engine(one)
        engines.engine(two)
        async with first.connect() as busy:  # `one` is in use, `two` idle: `two` goes
            await busy.execute(text("SELECT 1"))
            engines.engine(three)
            assert engines.open_on("s1") == 2
            assert engines.engine(one) is first  # still held
            # Every engine on the server busy: no third one is opened beyond the budget.
            async with engines.engine(three).connect() as also_busy:
                await also_busy.execute(text("SELECT 1"))
                with pytest.raises(TenantUnavailable):
                    engines.engine(two)
        # Another server has a budget of its own.
        engines.engine(_location(tmp_path, server="s2"))
        assert engines.open_on("s2") == 1
    finally:
        await engines.dispose()
    assert engines.open_on("s1") == 0


async def test_engines_unused_for_the_idle_time_are_closed(
    engines_settings: Settings, tmp_path: Path
) -> None:
    clock = Clock()
    engines = TenantEngines(engines_settings, clock=clock)
    try:
        engines.engine(_location(tmp_path))
        clock.now += 30
        await engines.sweep()
        assert engines.open_on("s1") == 1
        clock.now += 31
        await engines.sweep()
        assert engines.open_on("s1") == 0
    finally:
        await engines.dispose()
