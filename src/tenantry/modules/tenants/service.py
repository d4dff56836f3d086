"""Database per tenant: the registry, placement, provisioning, repair, migration, deletion.

The registry row is the truth about a tenant database, and every step is ordered so a
crash leaves a state the next `tenantry tenants provision` repairs:

1. `register`: a row in state `provisioning` on the server holding the fewest tenants,
   committed before anything exists on the server;
2. `build`: the database is copied from the server's template at the head revision
   (servers.py), or — no usable template, or a half-made database to finish — created
   (nothing if it exists) and migrated;
3. the row becomes `ready` — for a new organization in the request's own transaction,
   together with the organization's row: the organization exists iff its database is
   ready. A request that rolls back discards the database (after-rollback callback).

`repair` finishes rows whose organization exists, and discards the database and row of
one that does not (a crashed or rolled back creation; a hard deletion interrupted after
its commit), once the row is older than a grace period (a creation may be in flight).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.cache import Cache
from tenantry.core.db import Database, utcnow
from tenantry.core.errors import TenantUnavailable
from tenantry.core.migrate import alembic_config
from tenantry.core.routing import after_commit, after_rollback, end_transaction
from tenantry.core.storage import STORAGE
from tenantry.core.tenantdb import TenantEngines, TenantLocation, TenantRouting
from tenantry.modules.orgs import service as orgs
from tenantry.modules.tenants.models import SERVING_STATES, TenantDatabase, TenantState
from tenantry.modules.tenants.reads import TenantReader
from tenantry.modules.tenants.servers import (
    TenantServer,
    database_name,
    schema_revision,
    stored_object_keys,
    template_name,
)

log = logging.getLogger("tenantry.tenants")
MAINTENANCE_SECONDS = 30.0  # outbox relay of what a crash left, idle engines closed
DEFAULT_REPAIR_GRACE_SECONDS = 600.0


class TenantRegistry:
    """The registry as routing reads it (core/tenantdb.py `TenantDirectory`)."""

    def __init__(self, database: Database, servers: dict[str, TenantServer]) -> None:
        self.database = database
        self.servers = servers

    async def locate(self, organization_id: uuid.UUID) -> TenantLocation | None:
        async with self.database.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        TenantDatabase.server, TenantDatabase.database, TenantDatabase.state
                    ).where(
                        TenantDatabase.organization_id == organization_id,
                        TenantDatabase.state.in_(SERVING_STATES),
                    )
                )
            ).first()
        if row is None:
            return None
        server = self.servers.get(row.server)
        if server is None:  # a server removed from TENANT_DATABASE_SERVERS
            log.error("tenant %s is on %s, which is not configured", organization_id, row.server)
            return None
        return TenantLocation(
            organization_id=organization_id,
            server=server.name,
            database=row.database,
            url=server.database_url(row.database),
            writable=row.state == TenantState.READY.value,
        )

    async def ready_organizations(self) -> list[uuid.UUID]:
        async with self.database.engine.connect() as connection:
            found = await connection.scalars(
                select(TenantDatabase.organization_id).where(
                    TenantDatabase.state.in_(SERVING_STATES)
                )
            )
            return list(found)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one tenant database in a `provision`/`migrate` run."""

    organization_id: uuid.UUID
    action: str  # provisioned | migrated | up to date | removed | repaired | failed
    detail: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.action == "failed"


@dataclass(frozen=True, slots=True)
class TenantInfo:
    organization_id: uuid.UUID
    server: str
    database: str
    schema_revision: str | None
    state: str
    size_bytes: int | None


Progress = Callable[[Outcome], None]


class TenantDatabases:
    """Database per tenant for one process (app, worker or CLI run), built from settings;
    it makes `database` the control database (`Database.route_tenants`)."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self._head: str | None = None  # the head revision, read once (head_revision)
        servers = [TenantServer.from_setting(value) for value in settings.tenant_servers]
        self.servers = {server.name: server for server in servers}
        self.registry = TenantRegistry(database, self.servers)
        self.routing = TenantRouting(
            self.registry,
            TenantEngines(settings),
            database.engine,
            location_ttl=settings.tenant_location_ttl_seconds,
        )
        database.route_tenants(self.routing)
        # Reads across tenant databases (the GDPR export, /admin/orgs storage figures).
        self.reads = TenantReader(database)
        # Backup, restore and move (operations.py builds on this class), for the job
        # handlers of this database's worker (tasks.py) to reach.
        from tenantry.modules.tenants.operations import TENANT_OPERATIONS, TenantOperations

        self.operations = TenantOperations(self)
        database.wiring.provide(TENANT_OPERATIONS, self.operations)

    # --- placement and provisioning -----------------------------------------------------

    async def place(self, session: AsyncSession) -> TenantServer:
        """The configured server holding the fewest tenants (the first of equals)."""
        counted = await session.execute(
            select(TenantDatabase.server, func.count()).group_by(TenantDatabase.server)
        )
        counts: dict[str, int] = {row[0]: int(row[1]) for row in counted.all()}
        return min(self.servers.values(), key=lambda server: counts.get(server.name, 0))

    async def register(self, organization_id: uuid.UUID) -> TenantDatabase:
        """The organization's registry row, created (state `provisioning`) if missing."""
        async with self.database.transaction() as session:
            record = await session.get(TenantDatabase, organization_id)
            if record is not None:
                return record
            server = await self.place(session)
            record = TenantDatabase(
                organization_id=organization_id,
                server=server.name,
                database=database_name(organization_id),
                state=TenantState.PROVISIONING.value,
            )
            session.add(record)
        return record

    def server_of(self, record: TenantDatabase) -> TenantServer:
        server = self.servers.get(record.server)
        if server is None:
            raise RuntimeError(f"server {record.server} is not in TENANT_DATABASE_SERVERS")
        return server

    async def build(self, record: TenantDatabase) -> str | None:
        """Make the database of `record` — a copy of the server's template, or created and
        migrated — or finish a half-made one (migrated to the head); its revision."""
        server = self.server_of(record)
        if not await server.database_exists(record.database):
            cloned = await server.clone_template(record.database, self.head_revision())
            if cloned is not None:
                return cloned
        await server.create_database(record.database)
        return await server.migrate(record.database)

    async def provision_for_request(
        self, session: AsyncSession, organization_id: uuid.UUID
    ) -> None:
        """A new organization's database, ready before the request creates the organization.

        The request's transaction is ended first (it has only read so far): the registry
        row must be committed before the database exists, and on SQLite the request's
        write transaction would hold the lock the registry write needs. The row becomes
        `ready` in the request's next transaction, the one that inserts the organization;
        if that transaction does not commit, the database is discarded.
        """
        await end_transaction(session)
        record = await self.register(organization_id)
        server = self.server_of(record)
        created = False
        try:
            created = True  # from here on something may exist on the server
            revision = await server.clone_template(record.database, self.head_revision())
            if revision is None:  # nothing made: the template could not be used
                created = False
                await server.create_database(record.database)
                created = True
                revision = await server.migrate(record.database)
        except Exception as error:
            log.exception("provisioning the database of %s failed", organization_id)
            if created:
                await self._discard_quietly(organization_id)
            else:  # nothing was made on the server: only the registration goes
                await self._unregister(organization_id)
            raise TenantUnavailable(
                "The organization's database could not be created; try again shortly"
            ) from error
        await session.execute(
            update(TenantDatabase)
            .where(TenantDatabase.organization_id == organization_id)
            .values(state=TenantState.READY.value, schema_revision=revision, updated_at=utcnow())
        )

        async def discard() -> None:
            await self._discard_quietly(organization_id)

        after_rollback(session, discard)

    async def provision_existing(self, organization_id: uuid.UUID) -> Outcome:
        """Provision (or finish provisioning) the database of an existing organization."""
        started = time.monotonic()
        record = await self.register(organization_id)
        try:
            revision = await self.build(record)
        except Exception as error:
            await self._set(organization_id, state=TenantState.FAILED.value, last_error=str(error))
            return Outcome(organization_id, "failed", _one_line(error), _since(started))
        await self._set(
            organization_id,
            state=TenantState.READY.value,
            schema_revision=revision,
            last_error=None,
        )
        return Outcome(
            organization_id, "provisioned", f"{record.server} {record.database}", _since(started)
        )

    async def discard(self, organization_id: uuid.UUID) -> bool:
        """Drop the organization's database and its registry row; False if it had none."""
        record = await self._placed(organization_id)
        if record is None:
            return False
        self.routing.forget(organization_id)
        server = self.servers.get(record.server)
        if server is not None:
            await self.routing.engines.release(server.database_url(record.database))
            await server.drop_database(record.database)
        await self._unregister(organization_id)
        return True

    async def _placed(self, organization_id: uuid.UUID) -> Any:
        """The registry's (server, database) of the organization, whatever its state."""
        async with self.database.engine.connect() as connection:
            return (
                await connection.execute(
                    select(TenantDatabase.server, TenantDatabase.database).where(
                        TenantDatabase.organization_id == organization_id
                    )
                )
            ).first()

    async def _unregister(self, organization_id: uuid.UUID) -> None:
        async with self.database.transaction() as session:
            await session.execute(
                delete(TenantDatabase).where(TenantDatabase.organization_id == organization_id)
            )

    async def _discard_quietly(self, organization_id: uuid.UUID) -> None:
        """Clean up after a failed creation; what cannot be removed now stays registered
        (state `provisioning`) for `repair`."""
        try:
            await self.discard(organization_id)
        except Exception:
            log.exception(
                "could not discard the database of %s; `tenantry tenants provision` will",
                organization_id,
            )

    async def hard_delete_organization(
        self, session: AsyncSession, cache: Cache, organization_id: uuid.UUID
    ) -> bool:
        """Delete the organization for good: it is deleted (kept soft-deleted in the control
        database, whose audit log is append-only) and, once that committed, its stored
        objects and its database — every row it owned — go (`erase`; a crash in between:
        `repair` finishes it)."""
        if not await orgs.erase_organization(session, cache, organization_id):
            return False
        await session.execute(
            update(TenantDatabase)
            .where(TenantDatabase.organization_id == organization_id)
            .values(state=TenantState.DROPPING.value, updated_at=utcnow())
        )

        async def drop() -> None:
            await self.erase(organization_id)

        after_commit(session, drop)
        return True

    async def erase(self, organization_id: uuid.UUID) -> None:
        """The rest of a hard deletion, after its commit (and `repair`'s, after a crash):
        the organization's stored objects — uploads, exports, backups: every `files` row of
        its database, deleted ones included — are removed from storage, then the database
        is dropped. Objects first: once the database is gone nothing names them any more.
        """
        record = await self._placed(organization_id)
        server = self.servers.get(record.server) if record is not None else None
        keys: list[str] = []
        if (
            record is not None
            and server is not None
            and await server.database_exists(record.database)
        ):
            keys = await stored_object_keys(server.database_url(record.database))
        if keys:
            storage = self.database.wiring.get(STORAGE)
            if storage is None:
                raise RuntimeError("storage is not bound to the control database")
            for key in keys:
                await storage.delete(key)
        await self.discard(organization_id)

    async def repair(
        self,
        *,
        grace_seconds: float = DEFAULT_REPAIR_GRACE_SECONDS,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        """Make the registry and the servers agree with the organizations (see the module
        docstring); provision organizations that have no database yet."""
        async with self.database.session(write=False) as session:
            records = list(await session.scalars(select(TenantDatabase)))
            ids = [record.organization_id for record in records]
            existing = await orgs.existing_organization_ids(session, ids)
            organizations = await orgs.live_organization_ids(session)
        cutoff = utcnow() - dt.timedelta(seconds=grace_seconds)
        outcomes: list[Outcome] = []
        await self.tidy_templates()

        def report(outcome: Outcome) -> None:
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

        for record in records:
            org = record.organization_id
            if record.spare_database is not None and record.updated_at <= cutoff:
                # A restore or move killed midway (or after its switch): operations.py.
                done = await self.operations.repair_interrupted(org)
                if done is not None:
                    report(Outcome(org, "repaired", done))
                    continue
            if record.state == TenantState.DROPPING.value:
                await self.erase(org)
                report(Outcome(org, "removed", "organization erased"))
            elif org not in existing:
                if record.state == TenantState.READY.value or record.updated_at <= cutoff:
                    await self.discard(org)
                    report(Outcome(org, "removed", "no such organization"))
            elif record.state in (TenantState.PROVISIONING.value, TenantState.FAILED.value):
                report(await self.provision_existing(org))
        registered = {record.organization_id for record in records}
        for org in organizations:
            if org not in registered:
                report(await self.provision_existing(org))
        return outcomes

    async def tidy_templates(self) -> None:
        """Drop the templates a crashed build left, and those of other revisions (`repair`);
        a server that cannot be reached is left for the next run."""
        keep = template_name(self.head_revision())
        for server in self.servers.values():
            try:
                dropped = await server.tidy_templates(keep=keep)
            except Exception:
                log.exception("could not tidy the templates on %s", server.name)
                continue
            if dropped:
                log.info("dropped the templates %s on %s", ", ".join(dropped), server.name)

    # --- migration ------------------------------------------------------------------------

    def head_revision(self) -> str | None:
        if self._head is None:
            script = ScriptDirectory.from_config(alembic_config(self.settings.database_url))
            self._head = script.get_current_head()
        return self._head

    async def migrate(
        self,
        organization_ids: Sequence[uuid.UUID] | None = None,
        *,
        concurrency: int = 4,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        """Upgrade tenant databases (all serving ones by default), `concurrency` at once.

        Each database is checked first: one already at the head is left alone, so a run
        that stopped (a failure, a crash) continues where it stopped when run again. A
        failure is recorded on its row (`last_error`) and the others go on.
        """
        head = self.head_revision()
        async with self.database.session(write=False) as session:
            query = select(TenantDatabase).where(TenantDatabase.state.in_(SERVING_STATES))
            if organization_ids is not None:
                query = query.where(TenantDatabase.organization_id.in_(list(organization_ids)))
            records = list(await session.scalars(query.order_by(TenantDatabase.organization_id)))
        gate = asyncio.Semaphore(max(1, concurrency))
        # Several upgrades at once need several processes (servers.py says why).
        pool = (
            ProcessPoolExecutor(max_workers=concurrency, mp_context=get_context("spawn"))
            if concurrency > 1 and len(records) > 1
            else None
        )

        async def one(record: TenantDatabase) -> Outcome:
            async with gate:
                outcome = await self._migrate_one(record, head, pool)
            if progress is not None:
                progress(outcome)
            return outcome

        try:
            return list(await asyncio.gather(*(one(record) for record in records)))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    async def _migrate_one(
        self, record: TenantDatabase, head: str | None, pool: Executor | None
    ) -> Outcome:
        started = time.monotonic()
        org = record.organization_id
        try:
            server = self.server_of(record)
            before = await schema_revision(server.database_url(record.database))
            if before == head:
                if record.schema_revision != head or record.last_error is not None:
                    await self._set(org, schema_revision=head, last_error=None)
                return Outcome(org, "up to date", str(head), _since(started))
            after = await server.migrate(record.database, pool)
        except Exception as error:
            await self._set(org, last_error=_one_line(error))
            return Outcome(org, "failed", _one_line(error), _since(started))
        await self._set(org, schema_revision=after, last_error=None)
        return Outcome(org, "migrated", f"{before} -> {after}", _since(started))

    async def _set(self, organization_id: uuid.UUID, **values: object) -> None:
        async with self.database.transaction() as session:
            await session.execute(
                update(TenantDatabase)
                .where(TenantDatabase.organization_id == organization_id)
                .values(**values, updated_at=utcnow())
            )

    # --- the platform admin's view ----------------------------------------------------------

    async def list_tenants(
        self, session: AsyncSession, *, offset: int, limit: int
    ) -> tuple[list[TenantInfo], int]:
        total = int(await session.scalar(select(func.count()).select_from(TenantDatabase)) or 0)
        records = list(
            await session.scalars(
                select(TenantDatabase)
                .order_by(TenantDatabase.created_at.desc(), TenantDatabase.organization_id)
                .offset(offset)
                .limit(limit)
            )
        )
        sizes: dict[tuple[str, str], int] = {}
        for name, server in self.servers.items():
            wanted = [r.database for r in records if r.server == name]
            for database, size in (await server.sizes(wanted)).items():
                sizes[(name, database)] = size
        return [
            TenantInfo(
                organization_id=r.organization_id,
                server=r.server,
                database=r.database,
                schema_revision=r.schema_revision,
                state=r.state,
                size_bytes=sizes.get((r.server, r.database)),
            )
            for r in records
        ], total

    # --- the process's background upkeep --------------------------------------------------

    @asynccontextmanager
    async def maintained(self) -> AsyncIterator[None]:
        """Relay outboxes a crash left behind and close idle engines, until the exit."""
        task = asyncio.create_task(self._maintain(), name="tenant-databases")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.routing.dispose()

    async def _maintain(self) -> None:
        while True:
            try:
                await self.routing.relay_all()
                await self.routing.engines.sweep()
            except Exception:
                log.exception("tenant database upkeep failed")
            await asyncio.sleep(MAINTENANCE_SECONDS)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def _since(started: float) -> float:
    return time.monotonic() - started
