"""The session listeners of the feature modules, registered on a `Database` explicitly.

Core registers its own (tenant scoping, RLS, list totals) when a `Database` is built;
these are added by whoever builds the process: `create_app`, and `tenantry worker`
(`worker_setup`). Nothing is registered on SQLAlchemy's global `Session`, nothing at
import time (tests/test_architecture.py keeps it so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tenantry.core.db import Database, SessionListener
from tenantry.modules.audit.models import AUDIT_LISTENERS
from tenantry.modules.plans.usage import USAGE_LISTENERS, usage_bound
from tenantry.modules.tenants.service import TenantDatabases

FEATURE_LISTENERS: tuple[SessionListener, ...] = (
    *AUDIT_LISTENERS,  # audit entries cannot be updated or deleted
    *USAGE_LISTENERS,  # records created, counted once committed
)


def install_feature_listeners(database: Database) -> None:
    database.listen(FEATURE_LISTENERS)


@asynccontextmanager
async def worker_setup(database: Database) -> AsyncIterator[None]:
    """`tenantry worker`: the feature listeners and the usage store for its jobs."""
    install_feature_listeners(database)
    async with usage_bound(database):
        if not database.settings.database_per_tenant:
            yield
            return
        # Database per tenant: jobs of an organization run on its database, like requests.
        async with TenantDatabases(database.settings, database).maintained():
            yield
