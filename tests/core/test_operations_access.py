"""Who may read /metrics, and whether /docs and /openapi.json are served (item 15)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from fastapi import FastAPI

from tests.conftest import client_for

TOKEN = "metrics-" + "t" * 32
AppFactory = Callable[..., Awaitable[FastAPI]]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-of-some-length", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
)
async def test_metrics_need_the_token_when_one_is_set(
    build_app: AppFactory, authorization: str | None
) -> None:
    app = await build_app(metrics_token=TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    async with client_for(app) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "tenantry_http_requests" not in response.text


async def test_metrics_answer_with_the_token(build_app: AppFactory) -> None:
    app = await build_app(metrics_token=TOKEN)
    async with client_for(app) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "tenantry_http_request" in response.text


async def test_health_stays_open_when_metrics_need_a_token(build_app: AppFactory) -> None:
    app = await build_app(metrics_token=TOKEN)
    async with client_for(app) as client:
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200


async def test_docs_and_openapi_can_be_turned_off(build_app: AppFactory) -> None:
    app = await build_app(docs_enabled=False)
    async with client_for(app) as client:
        for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/health/live")).status_code == 200
    assert "/api/v1/auth/login" in app.openapi()["paths"]  # `tenantry openapi` still works


async def test_docs_and_openapi_are_served_by_default(build_app: AppFactory) -> None:
    app = await build_app()
    async with client_for(app) as client:
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
