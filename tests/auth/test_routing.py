"""Structural checks on the identity routes."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from tenantry.core.routing import UnitOfWorkRoute
from tenantry.modules.auth.mfa_router import router as mfa_router
from tenantry.modules.auth.router import router as auth_router
from tenantry.modules.users.router import router as users_router

IDENTITY_ROUTERS = (auth_router, mfa_router, users_router)


def test_every_identity_route_runs_in_a_unit_of_work() -> None:
    # A router declared without `route_class=UnitOfWorkRoute` keeps plain APIRoutes when
    # included, and its endpoints would silently never commit.
    routes = [r for router in IDENTITY_ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 25
    plain = [r.path for r in routes if not isinstance(r, UnitOfWorkRoute)]
    assert plain == []


def test_openapi_declares_bearer_auth_on_protected_routes(app: FastAPI) -> None:
    spec = app.openapi()
    assert "bearerAuth" in spec["components"]["securitySchemes"]
    assert spec["paths"]["/api/v1/users/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/api/v1/auth/login"]["post"]["security"] == []  # public
