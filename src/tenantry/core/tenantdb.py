"""Database per tenant (`TENANCY_MODE=database`): which database a statement runs on.

The database of `DATABASE_URL` is the *control* database (accounts, organizations,
memberships, API keys, plans, usage, jobs, the tenant registry); each organization's
tenant-owned rows live in a database of its own (`modules/tenants` provisions them). One
mechanism sends each statement to the right one: `AppSession.get_bind` (core/db.py) asks
`TenantRouting.bind_for`, which answers from the statement's model (or tables):

- control models (not `TenantOwned`, or marked `ControlPlane`) → the session's own engine;
- tenant models → the database of the organization the session is bound to
  (`bind_tenant`, done by the tenant gate for requests and by `open_job_session` for
  jobs): new code cannot forget it, there is nothing to call;
- companions (`Companion`: audit entries) → the tenant database when the transaction has
  written tenant rows (so an entry commits with its change), else the control database.

An unbound session never reaches a tenant database (the tenancy listeners refuse tenant
statements on it anyway). Jobs enqueued by a transaction that wrote tenant rows go to the
tenant database's own `jobs` table (an outbox, same transaction) and are relayed to the
control queue after commit, and by `relay_all` for what a crash left behind
(`relay_outbox`: copy with "insert unless present", then delete: idempotent).

Engines: PostgreSQL pools are per database, so one engine per tenant database, each with
`TENANT_DATABASE_POOL_SIZE` connections; at most `TENANT_DATABASE_CONNECTION_BUDGET`
connections per server per process (the least recently used idle engine is closed to make
room; 503 `tenant_unavailable` when every engine on the server is busy), and engines
unused for `TENANT_ENGINE_IDLE_SECONDS` are closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapper, ORMExecuteState, Session
from sqlalchemy.sql.util import find_tables
from sqlalchemy.util import await_only

from tenantry.config import Settings
from tenantry.core.db import (
    SQLITE_BEGIN_IMMEDIATE,
    AppSession,
    Base,
    Companion,
    ControlPlane,
    SessionListener,
    TenantOwned,
    create_engine_for,
)
from tenantry.core.errors import TenantUnavailable
from tenantry.core.metrics import install_statement_timing
from tenantry.core.tenancy import TenantScopeError, tenant_of

log = logging.getLogger("tenantry.tenantdb")

OUTBOX_TABLE = "jobs"  # tenant databases keep their not-yet-relayed jobs in their own table
RELAY_BATCH = 500
MOVING_RETRY_AFTER_SECONDS = 5
CROSS_TENANT_READ_REFUSED = (
    "tenant-owned rows read with all_tenants on a session with no tenant context: with a "
    "database per tenant (TENANCY_MODE=database) they are in each organization's own "
    "database, not the control database. Read them with TenantReads.read_each "
    "(core/tenantdb.py), which runs a read on a session bound to each organization, and "
    "keep the single all_tenants query for the shared mode (modules/admin/service.py "
    "`_storage_used` does both)"
)


class Home(Enum):
    CONTROL = "control"
    TENANT = "tenant"
    COMPANION = "companion"


def home_of(model: type[Any]) -> Home:
    """Where a model's rows live in database mode."""
    if not issubclass(model, TenantOwned) or issubclass(model, ControlPlane):
        return Home.CONTROL
    if issubclass(model, Companion):
        return Home.COMPANION
    return Home.TENANT


_MAPPER_HOMES: dict[Mapper[Any], Home] = {}


def _mapper_home(mapper: Mapper[Any]) -> Home:
    home = _MAPPER_HOMES.get(mapper)
    if home is None:
        home = _MAPPER_HOMES[mapper] = home_of(mapper.class_)
    return home


def table_homes() -> dict[str, Home]:
    """Every mapped table of the product and where it lives."""
    return {
        mapper.local_table.name: _mapper_home(mapper)
        for mapper in Base.registry.mappers
        if isinstance(mapper.local_table, Table)
    }


def tenant_database_tables() -> frozenset[str]:
    """The tables a tenant database uses: its tenant models, companions and the outbox."""
    homes = table_homes()
    return frozenset(
        {name for name, home in homes.items() if home is not Home.CONTROL} | {OUTBOX_TABLE}
    )


def control_only_tables() -> frozenset[str]:
    """Tables whose rows never live in a tenant database (foreign keys to them cannot hold
    there: modules/tenants detaches them after each tenant upgrade)."""
    return frozenset(set(Base.metadata.tables) - tenant_database_tables())


def _clause_home(clause: Any) -> Home:
    homes = table_homes()
    found = {homes.get(table.name, Home.CONTROL) for table in _tables_of(clause)}
    if Home.TENANT in found:
        return Home.TENANT
    if Home.COMPANION in found:
        return Home.COMPANION
    return Home.CONTROL


def _tables_of(clause: Any) -> list[Table]:
    try:
        return [t for t in find_tables(clause, include_crud=True) if isinstance(t, Table)]
    except Exception:  # a text() or a construct find_tables does not walk: control
        return []


@dataclass(frozen=True, slots=True)
class TenantLocation:
    """Where one organization's database is (from the tenant registry)."""

    organization_id: uuid.UUID
    server: str  # the server as the registry names it (no password)
    database: str  # the database name (PostgreSQL) or file name (SQLite)
    url: str  # the engine URL, credentials included: never logged nor answered
    # False while the database is being restored or moved (registry state `moving`):
    # writing sessions are refused (503 `tenant_unavailable`), reading ones are served.
    writable: bool = True


class TenantDirectory(Protocol):
    """The tenant registry as routing reads it (modules/tenants/registry.py)."""

    async def locate(self, organization_id: uuid.UUID) -> TenantLocation | None:
        """The organization's database if it is ready to serve, else None."""
        ...

    async def ready_organizations(self) -> list[uuid.UUID]: ...


class TenantProvisioner(Protocol):
    """What creating an organization needs in database mode (modules/tenants provides it;
    typed here so the organizations feature does not import the tenants feature)."""

    async def provision_for_request(
        self, session: AsyncSession, organization_id: uuid.UUID
    ) -> None: ...


T = TypeVar("T")


class TenantReads(Protocol):
    """Reading tenant rows of several organizations in database mode, where each
    organization's rows are in a database of its own (modules/tenants provides it, for the
    platform-wide readers: the GDPR export, `/admin/orgs`; typed here so they do not import
    the tenants feature).

    `read_each` runs `read` once per organization, on a read-only session bound to it
    (`bind_tenant` with a system context): the same routing, scoping and row-level security
    as a request of that organization, never committed. In the shared mode there is none
    (the routers get None) and those readers keep their one query over every organization.
    """

    async def serving_organizations(
        self, among: Sequence[uuid.UUID] | None = None
    ) -> list[uuid.UUID]:
        """The organizations whose database serves reads (registry `ready` or `moving`),
        all of them or those of `among`."""
        ...

    async def read_each(
        self,
        organization_ids: Sequence[uuid.UUID],
        read: Callable[[AsyncSession], Awaitable[T]],
    ) -> dict[uuid.UUID, T]:
        """`read`'s answer for each organization (a failure, e.g. 503 `tenant_unavailable`,
        fails the whole read: a partial answer would look complete)."""
        ...


@dataclass(slots=True, eq=False)
class _Held:
    engine: AsyncEngine
    server: str
    last_used: float
    write_bind: Engine | None = None  # SQLite: the BEGIN IMMEDIATE variant, made on demand


class TenantEngines:
    """One engine per tenant database, at most `budget / pool size` per server, idle closed."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.pool_size = settings.tenant_database_pool_size
        self.per_server = max(1, settings.tenant_database_connection_budget // self.pool_size)
        self.idle_seconds = settings.tenant_engine_idle_seconds
        self.clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()  # least recently used first
        self._closing: set[asyncio.Task[None]] = set()

    def engine(self, location: TenantLocation) -> AsyncEngine:
        return self._hold(location).engine

    def write_bind(self, location: TenantLocation) -> Engine:
        """The sync engine a writing session uses (SQLite: transactions BEGIN IMMEDIATE)."""
        held = self._hold(location)
        if held.write_bind is None:
            sync = held.engine.sync_engine
            held.write_bind = (
                sync.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
                if sync.dialect.name == "sqlite"
                else sync
            )
        return held.write_bind

    def open_on(self, server: str) -> int:
        """Tenant engines this process holds on `server`."""
        return sum(1 for held in self._held.values() if held.server == server)

    def _hold(self, location: TenantLocation) -> _Held:
        now = self.clock()
        held = self._held.get(location.url)
        if held is None:
            self._close_idle(now)
            self._make_room(location.server)
            engine = create_engine_for(
                self.settings, location.url, pool_size=self.pool_size, max_overflow=0
            )
            # Tenant-database statements count as the request's database time, like the
            # control engine's (core/metrics.py).
            install_statement_timing(engine)
            held = self._held[location.url] = _Held(engine, location.server, now)
        else:
            self._held.move_to_end(location.url)
        held.last_used = now
        return held

    def _make_room(self, server: str) -> None:
        mine = [url for url, held in self._held.items() if held.server == server]
        while len(mine) >= self.per_server:
            victim = next((url for url in mine if _unused(self._held[url])), None)
            if victim is None:
                raise TenantUnavailable(
                    "Every connection to this organization's database server is in use; "
                    "try again shortly"
                )
            mine.remove(victim)
            self._close(victim)

    def _close_idle(self, now: float) -> None:
        for url, held in list(self._held.items()):
            if now - held.last_used >= self.idle_seconds and _unused(held):
                self._close(url)

    def _close(self, url: str) -> None:
        held = self._held.pop(url)
        task = asyncio.get_running_loop().create_task(held.engine.dispose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def release(self, url: str) -> None:
        """Close the engine of `url` now (its database is about to be dropped)."""
        if url in self._held:
            self._close(url)
        await self.settle()

    async def sweep(self) -> None:
        """Close the engines unused for `TENANT_ENGINE_IDLE_SECONDS`."""
        self._close_idle(self.clock())
        await self.settle()

    async def settle(self) -> None:
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def dispose(self) -> None:
        for url in list(self._held):
            self._close(url)
        await self.settle()


def _unused(held: _Held) -> bool:
    checked_out: Any = getattr(held.engine.pool, "checkedout", None)
    return checked_out is None or checked_out() == 0


class TenantRouting:
    """The routing of one control `Database` (`Database.route_tenants`)."""

    def __init__(
        self,
        directory: TenantDirectory,
        engines: TenantEngines,
        control: AsyncEngine,
        *,
        location_ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.engines = engines
        self.control = control
        # Each process trusts a location it read for `location_ttl` seconds only: how every
        # process (app workers, job workers, a CLI run) learns of a restore's or move's
        # fence and switch, whichever process runs it (operations.py waits that long).
        self.location_ttl = location_ttl
        self.clock = clock
        self._locations: dict[uuid.UUID, tuple[TenantLocation, float]] = {}

    # --- the one decision, made for every statement (AppSession.get_bind) --------------

    def bind_for(
        self, session: Session, mapper: Any, clause: Any, *, across_tenants: bool = False
    ) -> Engine | None:
        """The tenant database's engine for this statement, or None for the control one.

        `across_tenants`: the statement asked for every organization's rows (the
        all_tenants execution option, core/tenancy.py). Unbound, a tenant model's rows are
        in no one database: the read is refused rather than answered from the control
        database, whose tenant tables are empty. A companion's (audit entries) is
        answered from the control database — its part there (membership, invitation,
        organization entries) is real; the part in tenant databases needs `TenantReads`.
        """
        home = _statement_home(mapper, clause)
        if home is Home.CONTROL:
            return None
        context = tenant_of(session)
        if context is None:
            if across_tenants and home is Home.TENANT:
                raise TenantScopeError(CROSS_TENANT_READ_REFUSED)
            return None
        if home is Home.COMPANION and not _wrote_tenant_rows(session):
            return None
        location = self._remembered(context.organization_id)
        if location is None:  # not known (or too old) here: ask the registry (in the greenlet)
            location = await_only(self.locate(context.organization_id))
        return self._bind(session, location)

    def _bind(self, session: Session, location: TenantLocation) -> Engine:
        if not location.writable and isinstance(session, AppSession) and session.writes:
            # The write fence of a restore or move (modules/tenants/operations.py): from
            # before the dump to the switch nothing may commit on the old database.
            raise TenantUnavailable(
                "This organization's database is being restored or moved; writes are "
                "refused until it is done (reads keep working)",
                retry_after=MOVING_RETRY_AFTER_SECONDS,
            )
        own = session.bind
        writes = isinstance(own, Engine) and own.get_execution_options().get(
            SQLITE_BEGIN_IMMEDIATE, False
        )
        if writes:
            return self.engines.write_bind(location)
        return self.engines.engine(location).sync_engine

    def _remembered(self, organization_id: uuid.UUID) -> TenantLocation | None:
        entry = self._locations.get(organization_id)
        if entry is None:
            return None
        location, expires = entry
        if self.clock() >= expires:
            del self._locations[organization_id]
            return None
        return location

    async def locate(self, organization_id: uuid.UUID) -> TenantLocation:
        location = self._remembered(organization_id)
        if location is not None:
            return location
        read_at = self.clock()  # trusted from the moment of the read, not of the answer
        location = await self.directory.locate(organization_id)
        if location is None:
            raise TenantUnavailable()
        self._locations[organization_id] = (location, read_at + self.location_ttl)
        return location

    def forget(self, organization_id: uuid.UUID) -> None:
        """Drop the remembered location (the database was dropped or moved, or its state
        changed): the next statement for the organization asks the registry again."""
        self._locations.pop(organization_id, None)

    async def engine_of(self, organization_id: uuid.UUID) -> AsyncEngine:
        return self.engines.engine(await self.locate(organization_id))

    async def tenant_bind(self, session: AsyncSession) -> Engine | None:
        """The sync engine the session's tenant rows use (None when it is unbound)."""
        context = tenant_of(session)
        if context is None:
            return None
        return self._bind(session.sync_session, await self.locate(context.organization_id))

    # --- the transaction's writes: what companions and new jobs follow ----------------

    def listeners(self) -> tuple[SessionListener, ...]:
        return (
            ("before_flush", _note_flushed_tenant_rows),
            ("do_orm_execute", _note_tenant_statement),
            ("after_transaction_end", _forget_tenant_writes),
        )

    # --- the outbox: jobs of tenant transactions, relayed to the control queue ---------

    async def relay_outbox(self, organization_id: uuid.UUID) -> list[uuid.UUID]:
        """Move the organization's outbox jobs to the control `jobs` table; their ids.

        Copy first ("insert unless the id is there"), then delete from the outbox: a crash
        in between leaves rows the next relay copies again as nothing and deletes.
        """
        engine = await self.engine_of(organization_id)
        jobs = Base.metadata.tables[OUTBOX_TABLE]
        moved: list[uuid.UUID] = []
        while True:
            async with engine.connect() as tenant:
                rows = (
                    (await tenant.execute(select(jobs).order_by(jobs.c.id).limit(RELAY_BATCH)))
                    .mappings()
                    .all()
                )
            if not rows:
                return moved
            ids = [row["id"] for row in rows]
            control = self.control.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            async with control.begin() as connection:
                await connection.execute(
                    _insert_ignoring_present(control, jobs), [dict(row) for row in rows]
                )
            async with engine.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True}).begin() as t:
                await t.execute(delete(jobs).where(jobs.c.id.in_(ids)))
            moved.extend(ids)
            if len(rows) < RELAY_BATCH:
                return moved

    async def relay_all(self) -> int:
        """Relay every ready tenant's outbox (what a crash after commit left): jobs moved."""
        moved = 0
        for organization_id in await self.directory.ready_organizations():
            try:
                moved += len(await self.relay_outbox(organization_id))
            except Exception:  # one unreachable tenant must not stop the others
                log.exception("outbox relay failed for organization %s", organization_id)
        return moved

    async def dispose(self) -> None:
        await self.engines.dispose()


def _insert_ignoring_present(engine: AsyncEngine, table: Table) -> Any:
    dialect_insert: Any = (
        postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    )
    return dialect_insert(table).on_conflict_do_nothing()


def _statement_home(mapper: Any, clause: Any) -> Home:
    if mapper is not None:
        found: Any = mapper if isinstance(mapper, Mapper) else getattr(mapper, "__mapper__", None)
        if isinstance(found, Mapper):
            return _mapper_home(found)
    if clause is not None:
        return _clause_home(clause)
    return Home.CONTROL


def _wrote_tenant_rows(session: Session) -> bool:
    return isinstance(session, AppSession) and session.wrote_tenant_rows


def _mark_tenant_writes(session: Session) -> None:
    if isinstance(session, AppSession):
        session.wrote_tenant_rows = True


def _note_flushed_tenant_rows(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, TenantOwned) and home_of(type(obj)) is Home.TENANT:
            _mark_tenant_writes(session)
            return


def _note_tenant_statement(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    if any(_mapper_home(mapper) is Home.TENANT for mapper in state.all_mappers):
        _mark_tenant_writes(state.session)


def _forget_tenant_writes(session: Session, transaction: Any) -> None:
    if transaction.parent is None and isinstance(session, AppSession):
        session.wrote_tenant_rows = False


def routing_of(session: AsyncSession | Session) -> TenantRouting | None:
    """The routing of the session's database (None in shared mode)."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    return sync.routing if isinstance(sync, AppSession) else None


async def tenant_bind(session: AsyncSession) -> Engine | None:
    """The engine of the session's tenant database in database mode, else None."""
    routing = routing_of(session)
    return await routing.tenant_bind(session) if routing is not None else None


async def outbox_bind(session: AsyncSession) -> Engine | None:
    """Where a job enqueued now must be written so it commits with the transaction: the
    tenant database when this transaction wrote tenant rows, else None (the control
    database's `jobs` table, as in shared mode)."""
    routing = routing_of(session)
    if routing is None or not _wrote_tenant_rows(session.sync_session):
        return None
    return await routing.tenant_bind(session)


__all__ = [
    "Home",
    "TenantDirectory",
    "TenantEngines",
    "TenantLocation",
    "TenantProvisioner",
    "TenantReads",
    "TenantRouting",
    "control_only_tables",
    "home_of",
    "outbox_bind",
    "routing_of",
    "table_homes",
    "tenant_bind",
    "tenant_database_tables",
]
