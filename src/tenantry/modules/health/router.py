"""Liveness, readiness and metrics (operations endpoints: not enveloped)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response

from tenantry.config import Settings
from tenantry.core.errors import Unauthorized
from tenantry.core.responses import JSONResponse
from tenantry.services import services_of

HealthCheck = Callable[[], Awaitable[object]]
CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> JSONResponse:
    """The process is up (no dependency is checked)."""
    return JSONResponse({"status": "ok"})


@router.get("/health/ready", responses={503: {"description": "A dependency is down"}})
async def ready(request: Request) -> JSONResponse:
    """Every dependency answers: database, and Redis when configured."""
    checks: dict[str, HealthCheck | None] = services_of(request).health_checks
    names = list(checks)
    results = await asyncio.gather(*(_run(checks[name]) for name in names))
    report = dict(zip(names, results, strict=True))
    healthy = all(result in ("ok", "disabled") for result in results)
    body = {
        "status": "ok" if healthy else "unavailable",
        "checks": report,
        "rateLimit": "enabled" if services_of(request).settings.rate_limit_enabled else "disabled",
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
    """Prometheus text exposition (`Authorization: Bearer <METRICS_TOKEN>` when set)."""
    settings: Settings = services_of(request).settings
    if settings.metrics_token is not None:
        _require_metrics_token(request, settings.metrics_token.get_secret_value())
    registry = services_of(request).metrics
    return Response(registry.render(), media_type=registry.content_type)


def _require_metrics_token(request: Request, expected: str) -> None:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    # Constant-time comparison: the token must not be guessable byte by byte.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise Unauthorized("A valid metrics token is required")
