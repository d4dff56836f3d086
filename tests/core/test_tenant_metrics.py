"""Per-tenant metrics (core/metrics.py): bounded labels, the busiest organizations, figures."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tenantry.core.hotreads import fetch_one
from tenantry.core.metrics import (
    OTHER_ORGANIZATIONS,
    HeavyHitters,
    TenantMetrics,
    begin_request_sample,
    current_request_sample,
    end_request_sample,
    install_statement_timing,
)
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.projects.service import PROJECT_BY_ID
from tests.conftest import client_for
from tests.factories import create_org, register


def organization_values(metrics: TenantMetrics) -> set[str]:
    """The distinct `organization` label values every per-tenant metric exports now."""
    values: set[str] = set()
    for metric in (metrics.requests, metrics.latency, metrics.database):
        for family in metric.collect():
            values |= {sample.labels["organization"] for sample in family.samples}
    return values


def requests_of(registry: CollectorRegistry, organization: str) -> float:
    value = registry.get_sample_value(
        "tenantry_tenant_http_requests_total", {"organization": organization}
    )
    return value or 0.0


# --- the heavy-hitters summary -------------------------------------------------------------


def test_the_summary_keeps_every_heavy_key_within_fixed_memory() -> None:
    rng = random.Random(7)
    heavy = [uuid.uuid4() for _ in range(5)]
    light = [uuid.uuid4() for _ in range(5000)]
    stream = heavy * 400 + [rng.choice(light) for _ in range(8000)]  # each heavy: 4 % of all
    rng.shuffle(stream)
    summary = HeavyHitters(capacity=40)
    for key in stream:
        summary.offer(key)
        assert len(summary) <= 40
    truth = Tally(stream)
    # Space-saving: a key seen more than total/capacity times (250) is monitored, its count
    # overestimates by at most the smallest count, and the counts add up to the stream.
    assert set(heavy) <= set(summary.top(5)) == set(heavy)
    floor = min(summary.count(key) for key in summary.top(40))
    for key in summary.top(40):
        assert truth[key] <= summary.count(key) <= truth[key] + floor
    assert sum(summary.count(key) for key in summary.top(40)) == len(stream)


def test_halving_keeps_the_order_and_forgets_the_rare() -> None:
    summary = HeavyHitters(capacity=8)
    keys = [uuid.uuid4() for _ in range(4)]
    for weight, key in zip((9, 5, 3, 1), keys, strict=True):
        for _ in range(weight):
            summary.offer(key)
    summary.halve()
    assert [summary.count(key) for key in keys] == [4, 2, 1, 0]
    assert summary.top(4) == keys[:3]
    for _ in range(20):  # still a working summary after the rebuild
        summary.offer(uuid.uuid4())
    assert len(summary) == 8


# --- bounded labels ---------------------------------------------------------------------------


def test_a_thousand_organizations_export_at_most_top_n_plus_one_values() -> None:
    top_n = 5
    metrics = TenantMetrics(CollectorRegistry(), top_n=top_n, refresh_every=500)
    rng = random.Random(3)
    heavy = [uuid.uuid4() for _ in range(3)]
    organizations = [uuid.uuid4() for _ in range(1000)]
    for step in range(20_000):
        organization = heavy[step % 3] if step % 4 == 0 else rng.choice(organizations)
        metrics.observe(organization, 0.01, 0.002)
        if step % 997 == 0:
            assert len(organization_values(metrics)) <= top_n + 1
    values = organization_values(metrics)
    assert len(values) <= top_n + 1
    assert OTHER_ORGANIZATIONS in values
    assert {str(organization) for organization in heavy} <= values  # the busiest are named
    assert len(metrics.labelled) <= top_n


def test_a_newly_busy_organization_takes_the_place_of_a_quiet_one() -> None:
    registry = CollectorRegistry()
    metrics = TenantMetrics(registry, top_n=2, refresh_every=100)
    early = [uuid.uuid4(), uuid.uuid4()]
    for _ in range(50):
        for organization in early:
            metrics.observe(organization, 0.01, 0.0)
    assert metrics.labelled == set(early)  # first come, while slots are free
    newcomer = uuid.uuid4()
    for _ in range(300):
        metrics.observe(newcomer, 0.01, 0.0)
        metrics.observe(early[0], 0.01, 0.0)
    assert metrics.labelled == {newcomer, early[0]}
    assert str(early[1]) not in organization_values(metrics)  # its series are gone
    assert requests_of(registry, str(newcomer)) > 0
    assert requests_of(registry, OTHER_ORGANIZATIONS) > 0  # the newcomer before its promotion


# --- database time ---------------------------------------------------------------------------


def _sleep_statement(engine: AsyncEngine, seconds: float) -> str:
    if engine.dialect.name == "sqlite":
        return f"SELECT sleep_ms({int(seconds * 1000)})"
    if engine.dialect.name == "postgresql":
        return f"SELECT pg_sleep({seconds})"
    return f"SELECT SLEEP({seconds})"


@pytest.fixture
async def timed_engine(database_url: str) -> Any:
    engine = create_async_engine(database_url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sleep_function(dbapi_connection: Any, _record: Any) -> None:
            def sleep_ms(ms: int) -> int:
                time.sleep(ms / 1000)
                return ms

            dbapi_connection.create_function("sleep_ms", 1, sleep_ms)

    install_statement_timing(engine)
    install_statement_timing(engine)  # idempotent: time is not counted twice
    yield engine
    await engine.dispose()


async def test_database_time_is_the_time_statements_take(timed_engine: AsyncEngine) -> None:
    async with timed_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # connect outside the measure
        sample, token = begin_request_sample()
        try:
            started = time.perf_counter()
            await connection.execute(text(_sleep_statement(timed_engine, 0.05)))
            wall = time.perf_counter() - started
            await asyncio.sleep(0.1)  # not database time
            assert 0.05 <= sample.db_seconds <= wall

            with pytest.raises(DBAPIError):  # a failed statement closes its interval too
                await connection.execute(text("SELECT no_such_function_here()"))
            await connection.rollback()
            before = sample.db_seconds
            await connection.execute(text(_sleep_statement(timed_engine, 0.05)))
            assert sample.db_seconds - before >= 0.05
        finally:
            end_request_sample(token)
    assert current_request_sample() is None


async def test_concurrent_statements_of_one_request_are_not_counted_twice(
    timed_engine: AsyncEngine,
) -> None:
    async def sleep_once() -> None:
        async with timed_engine.connect() as connection:
            await connection.execute(text(_sleep_statement(timed_engine, 0.3)))

    await asyncio.gather(sleep_once(), sleep_once())  # the pool holds two connections now
    sample, token = begin_request_sample()
    try:
        started = time.perf_counter()
        await asyncio.gather(sleep_once(), sleep_once())
        wall = time.perf_counter() - started
    finally:
        end_request_sample(token)
    assert wall < 0.55  # the two statements did overlap (else the check below says little)
    assert 0.3 <= sample.db_seconds <= wall


# --- through the API ----------------------------------------------------------------------------


async def test_a_known_request_is_counted_once_for_its_organization(
    build_app: Callable[..., Any],
) -> None:
    application = await build_app(rate_limit_enabled=False, tenant_metrics_top_n=3)
    registry = application.state.services.metrics.registry
    async with client_for(application) as client:
        owner = await register(client)
        org = await create_org(client, owner)
        assert requests_of(registry, org.id) == 0  # creating it is not a request *of* it

        started = time.perf_counter()
        response = await client.get(f"{org.path}/projects", headers=owner.headers)
        wall = time.perf_counter() - started
        assert response.status_code == 200

        labels = {"organization": org.id}
        count = registry.get_sample_value("tenantry_tenant_http_requests_total", labels)
        latency_count = registry.get_sample_value(
            "tenantry_tenant_http_request_duration_seconds_count", labels
        )
        latency = registry.get_sample_value(
            "tenantry_tenant_http_request_duration_seconds_sum", labels
        )
        database = registry.get_sample_value("tenantry_tenant_database_seconds_total", labels)
        assert (count, latency_count) == (1.0, 1.0)
        assert 0 < latency <= wall
        assert 0 < database < latency

        created = await client.post(
            f"{org.path}/projects", json={"name": "measured"}, headers=owner.headers
        )
        assert created.status_code == 201
        assert requests_of(registry, org.id) == 2
        text_format = (await client.get("/metrics")).text
    assert f'tenantry_tenant_http_requests_total{{organization="{org.id}"}} 2.0' in text_format


async def test_a_rejected_caller_is_not_counted_for_the_organization(
    build_app: Callable[..., Any],
) -> None:
    application = await build_app(rate_limit_enabled=False)
    registry = application.state.services.metrics.registry
    async with client_for(application) as client:
        owner, stranger = await register(client), await register(client)
        org = await create_org(client, owner)
        response = await client.get(f"{org.path}/projects", headers=stranger.headers)
        assert response.status_code == 404
    assert requests_of(registry, org.id) == 0
    assert requests_of(registry, OTHER_ORGANIZATIONS) == 0


async def test_top_n_zero_turns_the_per_tenant_metrics_off(
    build_app: Callable[..., Any],
) -> None:
    application = await build_app(tenant_metrics_top_n=0)
    async with client_for(application) as http:
        owner = await register(http)
        org = await create_org(http, owner)
        assert (await http.get(f"{org.path}/projects", headers=owner.headers)).status_code == 200
        assert "tenantry_tenant_" not in (await http.get("/metrics")).text


async def test_a_hot_read_counts_as_database_time(app: Any) -> None:
    # On PostgreSQL a session outside a transaction reads through the raw driver, which the
    # engine's statement events never see: `DatabaseTime` around it is what counts it.
    database = app.state.database
    async with database.session(write=False) as session:
        bind_tenant(session, TenantContext(organization_id=uuid.uuid4()))
        assert not session.in_transaction()
        sample, token = begin_request_sample()
        try:
            assert await fetch_one(session, PROJECT_BY_ID, project_id=uuid.uuid4()) is None
        finally:
            end_request_sample(token)
    assert sample.db_seconds > 0
