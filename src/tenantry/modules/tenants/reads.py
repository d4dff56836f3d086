"""Reads across tenant databases (core/tenantdb.py `TenantReads`), for the platform-wide
readers in database mode: the GDPR export reads every serving tenant database, the
`/admin/orgs` page the databases of its organizations.

Each organization is read on a session of its own, read-only (`Database.session(write=
False)`: a database being restored or moved is still served) and bound to it with a
system context, so routing, scoping and row-level security are those of any request of
that organization; the session is closed without commit. At most `concurrency` databases
are read at once: each read holds one tenant connection (within the engine budget of
`TenantEngines`) and no control connection but the registry lookup's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import Database
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.tenants.models import SERVING_STATES, TenantDatabase

T = TypeVar("T")
READ_CONCURRENCY = 4  # tenant databases read at once by one cross-tenant read


class TenantReader:
    """`TenantReads` over the tenant registry of one control `Database`."""

    def __init__(self, database: Database, *, concurrency: int = READ_CONCURRENCY) -> None:
        self.database = database
        self.concurrency = max(1, concurrency)

    async def serving_organizations(
        self, among: Sequence[uuid.UUID] | None = None
    ) -> list[uuid.UUID]:
        query = select(TenantDatabase.organization_id).where(
            TenantDatabase.state.in_(SERVING_STATES)
        )
        if among is not None:
            if not among:
                return []
            query = query.where(TenantDatabase.organization_id.in_(list(among)))
        async with self.database.engine.connect() as connection:
            found = await connection.scalars(query.order_by(TenantDatabase.organization_id))
            return list(found)

    async def read_each(
        self,
        organization_ids: Sequence[uuid.UUID],
        read: Callable[[AsyncSession], Awaitable[T]],
    ) -> dict[uuid.UUID, T]:
        wanted = list(dict.fromkeys(organization_ids))
        gate = asyncio.Semaphore(self.concurrency)
        answers: dict[uuid.UUID, T] = {}

        async def one(organization_id: uuid.UUID) -> None:
            async with gate, self.database.session(write=False) as session:
                bind_tenant(session, TenantContext.system(organization_id))
                answers[organization_id] = await read(session)

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the others
                for organization_id in wanted:
                    group.create_task(one(organization_id))
        except ExceptionGroup as failed:  # the first error as itself (503, not a 500)
            raise failed.exceptions[0] from None
        return {organization_id: answers[organization_id] for organization_id in wanted}


__all__ = ["READ_CONCURRENCY", "TenantReader"]
