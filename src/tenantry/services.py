"""`Services`: everything one app instance is made of, built once by `create_app`.

Requests reach it through one typed dependency (`ServicesDep`, or `services_of(request)`
where a dependency cannot be declared); jobs and scripts are handed the pieces they need
as arguments. It is the only object stored on `app.state` by the app itself, so a reader
finds every service's type here instead of string keys spread over the modules.

The types are only imported for type checking: `core/` code reads the services too (no
import cycle), and core must not import feature modules at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from tenantry.core.db import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tenantry.config import Settings
    from tenantry.core.authz import TenantGate
    from tenantry.core.cache import Cache
    from tenantry.core.db import Database
    from tenantry.core.events import EventBus
    from tenantry.core.jobs.runtime import JobsRuntime
    from tenantry.core.mail.backends import Mailer
    from tenantry.core.metrics import Metrics
    from tenantry.core.ratelimit import RateLimiter
    from tenantry.core.security import Security
    from tenantry.core.storage import Storage
    from tenantry.modules.auth.revocation import Revocations
    from tenantry.modules.events.slots import StreamSlots
    from tenantry.modules.files.slots import UploadSlots
    from tenantry.modules.identity.service import ExternalAuth
    from tenantry.modules.plans.apirate import PlanRate
    from tenantry.modules.plans.counters import UsageStore
    from tenantry.modules.tenants.service import TenantDatabases

HealthCheck = Callable[[], Awaitable[object]]


@dataclass(slots=True, eq=False)
class Services:
    settings: Settings
    database: Database
    redis: Redis | None
    cache: Cache  # memberships, session facts (near-cached in process with Redis)
    counts_cache: Cache  # list totals, apart so searches never evict the above
    rate_limiter: RateLimiter  # exact limits (logins, uploads, ...)
    plan_rate: PlanRate  # the plan's per-organization API rate, counted in process
    mailer: Mailer
    storage: Storage
    upload_slots: UploadSlots
    event_streams: StreamSlots  # open event streams per user and organization (429)
    events: EventBus  # real-time events: publish after commit, subscribe (core/events.py)
    usage: UsageStore
    jobs: JobsRuntime
    metrics: Metrics
    security: Security
    revocations: Revocations
    external: ExternalAuth  # external OIDC issuers' tokens → linked users (AUTH_PROVIDERS)
    gate: TenantGate  # principal + membership + plan → the request's TenantContext
    health_checks: dict[str, HealthCheck | None] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)  # the time plan checks see (tests move it)
    # TENANCY_MODE=database: registry, provisioning, routing (None in the shared mode)
    tenant_databases: TenantDatabases | None = None


def services_of(source: HTTPConnection | Starlette) -> Services:
    """The services of an app, or of the app serving a request (set by `create_app`)."""
    app = source if isinstance(source, Starlette) else source.app
    services: Services = app.state.services
    return services


async def get_services(connection: HTTPConnection) -> Services:
    return services_of(connection)


ServicesDep = Annotated[Services, Depends(get_services)]
