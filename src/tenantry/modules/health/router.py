"""Liveness, readiness and metrics (operations endpoints: not enveloped)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response

from tenantry.core.responses import JSONResponse

HealthCheck = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> JSONResponse:
    """The process is up (no dependency is checked)."""
    return JSONResponse({"status": "ok"})


@router.get("/health/ready", responses={503: {"description": "A dependency is down"}})
async def ready(request: Request) -> JSONResponse:
    """Every dependency answers: database, and Redis when configured."""
    checks: dict[str, HealthCheck | None] = request.app.state.health_checks
    names = list(checks)
    results = await asyncio.gather(*(_run(checks[name]) for name in names))
    report = dict(zip(names, results, strict=True))
    healthy = all(result in ("ok", "disabled") for result in results)
    body = {
        "status": "ok" if healthy else "unavailable",
        "checks": report,
        "rateLimit": "enabled" if request.app.state.settings.rate_limit_enabled else "disabled",
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _run(check: HealthCheck | None) -> str:
    if check is None:
        return "disabled"
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return "down: timed out"
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
