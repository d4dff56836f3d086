"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from tenantry.core.routing import UnitOfWorkRoute
from tests.conftest import USES_REDIS, client_for

CLOSED_PORT_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"


async def test_live(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_each_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == ("ok" if USES_REDIS else "disabled")
    assert body["rateLimit"] in {"enabled", "disabled"}


async def test_ready_is_503_naming_the_database_when_it_is_unreachable(
    build_app: Callable[..., Any],
) -> None:
    application = await build_app(database_url=CLOSED_PORT_DATABASE, database_pool_timeout=1)
    async with client_for(application) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("down")


async def test_ready_is_503_naming_redis_when_it_is_unreachable(
    build_app: Callable[..., Any],
) -> None:
    application = await build_app(redis_url="redis://127.0.0.1:1/0")
    async with client_for(application) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["redis"].startswith("down")


async def test_rate_limit_switch_is_reported(build_app: Callable[..., Any]) -> None:
    application = await build_app(rate_limit_enabled=False)
    async with client_for(application) as client:
        response = await client.get("/health/ready")
    assert response.json()["rateLimit"] == "disabled"


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/health/live")
    await client.get("/api/v1/definitely/not/here")
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'tenantry_http_requests_total{method="GET",route="/health/live",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "tenantry_http_request_duration_seconds_bucket" in text
    assert 'tenantry_db_pool_connections{state="checked_out"}' in text


async def test_openapi_documents_error_envelopes_and_no_422(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    if any(path.startswith("/api/v1") for path in spec["paths"]):
        assert "ErrorEnvelope" in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "422" not in operation["responses"], (method, path)
            if path.startswith("/api/v1"):
                assert {"500", "503"} <= set(operation["responses"]), (method, path)
                if operation.get("parameters") or operation.get("requestBody"):
                    assert "400" in operation["responses"], (method, path)


def test_every_api_route_runs_in_a_unit_of_work(app: FastAPI) -> None:
    # An included router keeps its own route class: one declared without
    # `route_class=UnitOfWorkRoute` would have endpoints that silently never commit.
    api_routes = [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.path.startswith("/api/v1")
    ]
    assert len(api_routes) >= 25
    plain = [
        context.path
        for context in api_routes
        if not isinstance(context.original_route, UnitOfWorkRoute)
    ]
    assert plain == []
