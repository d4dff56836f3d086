"""`create_app(settings)`: the whole wiring of one tenantry instance, top to bottom.

Nothing happens at import time; everything an instance needs is one typed `Services`
object (tenantry/services.py) on `app.state.services`, so tests build as many independent
apps as they like.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from redis.asyncio import Redis

from tenantry import __version__
from tenantry.config import Settings, load_settings
from tenantry.core.authz import document_permissions
from tenantry.core.cache import Cache, create_cache
from tenantry.core.counts import CountCache, bind_counts
from tenantry.core.db import Clock, Database
from tenantry.core.errors import install_error_handlers
from tenantry.core.events import bind_events, create_event_bus
from tenantry.core.jobs.runtime import JobsRuntime
from tenantry.core.logging import configure_logging
from tenantry.core.mail import bind_mail, create_mailer
from tenantry.core.metrics import Metrics
from tenantry.core.middleware import BodyDeadline, RequestContextMiddleware
from tenantry.core.nearcache import NearCache
from tenantry.core.openapi import finalize_openapi
from tenantry.core.ratelimit import create_rate_limiter
from tenantry.core.responses import configure_lists
from tenantry.core.security import Security
from tenantry.core.storage import bind_storage, create_storage
from tenantry.modules.admin.router import router as admin_router
from tenantry.modules.api_keys.router import router as api_keys_router
from tenantry.modules.audit.router import router as audit_router
from tenantry.modules.auth.mfa_router import router as mfa_router
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.auth.router import router as auth_router
from tenantry.modules.events.router import router as events_router
from tenantry.modules.events.slots import create_stream_slots
from tenantry.modules.exports.router import router as exports_router
from tenantry.modules.files.router import router as files_router
from tenantry.modules.files.slots import create_upload_slots
from tenantry.modules.health.router import router as health_router
from tenantry.modules.identity.router import router as identity_router
from tenantry.modules.identity.service import ExternalAuth
from tenantry.modules.orgs.gate import OrgGate
from tenantry.modules.orgs.routers.invitations import router as invitations_router
from tenantry.modules.orgs.routers.jobs import router as org_jobs_router
from tenantry.modules.orgs.routers.members import router as members_router
from tenantry.modules.orgs.routers.orgs import router as orgs_router
from tenantry.modules.plans.apirate import PlanRate
from tenantry.modules.plans.counters import create_usage_store
from tenantry.modules.plans.router import router as plans_router
from tenantry.modules.plans.usage import bind_usage
from tenantry.modules.projects.router import router as projects_router
from tenantry.modules.tasks.router import org_router as org_tasks_router
from tenantry.modules.tasks.router import router as tasks_router
from tenantry.modules.tenants.router import router as tenants_admin_router
from tenantry.modules.tenants.service import TenantDatabases
from tenantry.modules.users.router import router as users_router
from tenantry.services import Services
from tenantry.sessions import install_feature_listeners

API_PREFIX = "/api/v1"
# The cache keys every tenant request reads: kept in process memory (core/nearcache.py).
NEAR_CACHED = ("orgs:access:", "auth:session:", "auth:valid-after:")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings)
    database = Database(settings)
    install_feature_listeners(database)  # audit immutability, records counted for usage
    # TENANCY_MODE=database: DATABASE_URL is the control database, and each organization's
    # tenant-owned rows go to its own database (core/tenantdb.py routes the sessions).
    tenant_databases = TenantDatabases(settings, database) if settings.database_per_tenant else None
    redis = create_redis(settings)
    cache = create_access_cache(settings, redis)
    # List totals, invalidated by each org's writes, in a cache of their own: a flood of
    # distinct searches evicts other totals, never memberships or session facts.
    counts_cache = create_cache(settings, redis, namespace="counts")
    bind_counts(database, CountCache(counts_cache))
    configure_lists(
        max_offset_rows=settings.max_offset_rows, search_count_cap=settings.search_count_cap
    )
    rate_limiter = create_rate_limiter(settings, redis)
    plan_rate = PlanRate(
        redis,
        settings.redis_key_prefix,
        enabled=settings.rate_limit_enabled,
        sync_seconds=settings.plan_rate_sync_seconds,
    )
    mailer = create_mailer(settings)
    bind_mail(database, mailer)  # requests queue email; the embedded worker sends it
    storage = create_storage(settings)
    bind_storage(database, storage)  # job handlers (exports) write files too
    events = create_event_bus(settings, redis)  # in process, or Redis streams across them
    bind_events(database, events)  # audited changes and job states, announced after commit
    usage_store = create_usage_store(redis, settings.redis_key_prefix)
    bind_usage(database, usage_store)  # daily counters: memory, or Redis with REDIS_URL
    jobs = JobsRuntime(settings, database, run_worker=settings.runs_embedded_worker)
    security = Security.from_settings(settings)  # hashing, JWTs, secret sealing
    revocations = Revocations(  # the database decides, the cache remembers
        cache, database, access_token_ttl_seconds=settings.access_token_ttl_seconds
    )
    external = ExternalAuth(settings, database)  # AUTH_PROVIDERS: JWKS per issuer, JIT links
    clock = Clock()
    services = Services(
        settings=settings,
        database=database,
        redis=redis,
        cache=cache,
        counts_cache=counts_cache,
        rate_limiter=rate_limiter,
        plan_rate=plan_rate,
        mailer=mailer,
        storage=storage,
        upload_slots=create_upload_slots(settings, redis),  # uploads in flight (429)
        event_streams=create_stream_slots(settings, redis),
        events=events,
        usage=usage_store,
        jobs=jobs,
        metrics=Metrics(database, tenant_top_n=settings.tenant_metrics_top_n),
        security=security,
        revocations=revocations,
        external=external,
        gate=OrgGate(  # principal → membership → plan → API rate → usage
            security=security,
            revocations=revocations,
            external=external,
            cache=cache,
            database=database,
            plan_rate=plan_rate,
            usage=usage_store,
            clock=clock,
        ),
        health_checks={
            "database": database.ping,
            "redis": redis.ping if redis is not None else None,
        },
        clock=clock,
        tenant_databases=tenant_databases,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if isinstance(cache, NearCache):
            await cache.start()
        await jobs.start()
        try:
            if tenant_databases is None:
                yield
            else:
                async with tenant_databases.maintained():  # outbox relay, idle engines
                    yield
        finally:
            await jobs.stop()  # first: running jobs may still send mail or store files
            await events.close()
            await storage.close()
            await mailer.close()
            await rate_limiter.close()
            await plan_rate.close()
            await usage_store.close()
            await cache.close()
            await counts_cache.close()
            await external.close()
            if redis is not None:
                await redis.aclose()
            await database.dispose()

    app = FastAPI(
        title="tenantry",
        version=__version__,
        summary="Multi-tenant SaaS backend: accounts, organizations, isolation, jobs, plans.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        redoc_url=None,
        debug=settings.debug,
    )
    app.state.services = services
    # The pieces tests and scripts reach for by name; application code reads `services`.
    app.state.settings = settings
    app.state.database = database
    app.state.cache = cache

    install_error_handlers(app)
    for router in api_routers(settings):
        # Each feature router is included once, straight under `/api/v1`: FastAPI (≥ 0.137)
        # matches included routers level by level, per request, so an extra level of
        # nesting cost ~10 % of a cached read (docs/performance.md).
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health_router)
    _install_middleware(app, settings, services.metrics)
    _install_openapi(app)
    return app


def api_routers(settings: Settings | None = None) -> list[APIRouter]:
    """Every feature router (mounted under `/api/v1`, each endpoint in its own unit of work)."""
    api: list[APIRouter] = []
    api.append(auth_router)
    api.append(mfa_router)
    api.append(identity_router)
    api.append(users_router)
    api.append(orgs_router)
    api.append(members_router)
    api.append(invitations_router)
    api.append(api_keys_router)
    api.append(audit_router)
    api.append(org_jobs_router)
    api.append(projects_router)
    api.append(tasks_router)
    api.append(org_tasks_router)
    api.append(files_router)
    api.append(exports_router)
    api.append(events_router)
    api.append(plans_router)
    api.append(admin_router)
    if settings is not None and settings.database_per_tenant:
        api.append(tenants_admin_router)  # GET /admin/tenants
    return api


def create_access_cache(settings: Settings, redis: Redis | None) -> Cache:
    """The cache of memberships and session facts. With Redis, the facts every tenant request
    reads are also copied into the process and invalidated over pub/sub (core/nearcache.py);
    a script that changes them (`tenantry tenants delete`) writes through the same object,
    so every serving process drops its copies."""
    cache = create_cache(settings, redis)
    if redis is None or settings.near_cache_stale_seconds <= 0:
        return cache
    return NearCache(
        cache,
        redis,
        channel=f"{settings.redis_key_prefix}cache:invalidations",
        prefixes=NEAR_CACHED,
        stale_seconds=settings.near_cache_stale_seconds,
    )


def create_redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=2,
        health_check_interval=30,
    )


def _install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    # One layer of ours (request id, security headers, body limit and deadline, gzip of
    # large answers, metrics, access log); CORS only when configured, inside it, so every
    # answer (a CORS preflight, a 413, a 500) still carries the request id.
    if settings.cors_origins:
        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=not wildcard,  # never `*` together with credentials
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "Idempotency-Key",
                "X-API-Key",
                "X-Request-Id",
            ],
            expose_headers=["ETag", "Retry-After", "X-Request-Id"],
            max_age=600,
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        deadline=BodyDeadline(
            timeout=settings.body_read_timeout_seconds,
            grace=settings.body_read_grace_seconds,
            min_rate=settings.body_min_bytes_per_second,
        ),
    )


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            app.openapi_schema = document_permissions(
                finalize_openapi(schema, app.routes), app.routes
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory` (used by `tenantry serve --workers/--reload`)."""
    from tenantry.core import collector

    app = create_app(load_settings())
    collector.settle()
    return app
