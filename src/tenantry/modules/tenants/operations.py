"""Backup, restore and move of one organization's database (API.md, "Tenancy modes").

The admin endpoints (router.py, through jobs in tasks.py) and the CLI (cli.py) call the
same functions here. A restore and a move are one procedure, `_relocate`:

1. **fence** — in one control transaction, only from state `ready`: state `moving`, and
   the database to be built recorded as the row's *spare* (`spare_server`,
   `spare_database`). From here the routing refuses every writing session of the
   organization (core/tenantdb.py `TenantRouting._bind`: 503 `tenant_unavailable` with
   `Retry-After`); reads keep going to the old database. Every process trusts the
   location it read from the registry for TENANT_LOCATION_TTL_SECONDS only: the
   operation waits that long, so each process (app, worker, another CLI run) has re-read
   the row and refuses the organization's writes (this process forgets at once).
2. **drain** — wait until no transaction that has written is open on the old database
   (PostgreSQL: no other backend there holds a transaction id; SQLite: take and release
   the write lock), so everything acknowledged is in what is copied next;
3. **copy** — a move dumps the old database (`backup_database`); a restore loads the
   chosen backup file. The spare database is made on the target server and the dump
   restored into it (a restore's spare is migrated to the head: a backup may be older);
4. **verify** (move) — `checksum_tables` over every tenant table of the old and the new
   database must be equal: a write that reached the old database after the dump (a
   process that had not learnt the fence) makes them differ and the move is abandoned;
5. **switch** — in one control transaction, only if the row is still `moving` with this
   spare: the row names the new database, the old one becomes the spare, state `ready`.
   After another TENANT_LOCATION_TTL_SECONDS (reads of processes that had not re-read
   the row yet went to the old, unchanged database) it is dropped and the spare cleared.

Any failure before the switch abandons the operation: the spare is dropped, the row goes
back to `ready` on the old database, which was never written to. A crash (the process
killed) leaves the row `moving` with its spare: `repair_interrupted` (run by
`tenantry tenants provision` and before a `move`/`restore`) does the same abandoning, or,
after the switch, drops the old database the crash left.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import select, update

from tenantry.core.db import Wired, utcnow
from tenantry.core.errors import Conflict, NotFound, TenantUnavailable, ValidationFailed
from tenantry.core.tenantdb import tenant_database_tables
from tenantry.modules.tenants import backup as backups
from tenantry.modules.tenants.models import TenantDatabase, TenantState
from tenantry.modules.tenants.servers import TenantServer, database_name
from tenantry.modules.tenants.service import TenantDatabases

log = logging.getLogger("tenantry.tenants")

DRAIN_SECONDS = 30.0  # how long in-flight writes on the old database may take to finish
BACKUP_KEY_PREFIX = "orgs/{organization_id}/backups/"

Step = Callable[[str], Awaitable[None] | None]


class OperationFailed(Exception):
    """A restore or move was abandoned; the organization still serves from its database."""


@dataclass(frozen=True, slots=True)
class Relocated:
    organization_id: uuid.UUID
    server: str
    database: str
    seconds: float


def is_backup_of(organization_id: uuid.UUID, storage_key: str) -> bool:
    """The server stores an organization's backups under its own prefix (store_backup)."""
    return storage_key.startswith(BACKUP_KEY_PREFIX.format(organization_id=organization_id))


class TenantOperations:
    """Backup, restore and move for the tenant databases of one process."""

    def __init__(self, tenants: TenantDatabases) -> None:
        self.tenants = tenants
        self.database = tenants.database

    # --- what the endpoints check before queueing (4xx, nothing changed) ----------------

    async def record(self, organization_id: uuid.UUID) -> TenantDatabase:
        async with self.database.session(write=False) as session:
            record = await session.get(TenantDatabase, organization_id)
        if record is None:
            raise NotFound("No tenant database is registered for this organization")
        return record

    async def check_ready(self, organization_id: uuid.UUID) -> TenantDatabase:
        record = await self.record(organization_id)
        if record.state != TenantState.READY.value:
            raise Conflict(
                f"The organization's database is {record.state}; it must be ready "
                "(see `tenantry tenants provision`)"
            )
        return record

    def target_server(self, record: TenantDatabase, server: str) -> TenantServer:
        found = self.tenants.servers.get(server)
        if found is None:
            raise ValidationFailed(
                "Unknown server: name one of TENANT_DATABASE_SERVERS as GET /admin/tenants "
                "shows them"
            )
        if found.name == record.server:
            raise ValidationFailed("The organization's database is already on that server")
        return found

    # --- backup -------------------------------------------------------------------------

    async def backup(
        self, organization_id: uuid.UUID, *, directory: Path | None = None
    ) -> backups.Dump:
        """A dump of the organization's database on local disk (the caller owns the file)."""
        location = await self.tenants.registry.locate(organization_id)
        if location is None:
            raise TenantUnavailable("The organization's database is not serving")
        return await backups.backup_database(location.url, directory=directory)

    # --- restore and move -----------------------------------------------------------------

    async def restore(
        self,
        organization_id: uuid.UUID,
        dump: backups.Dump | Path,
        *,
        progress: Step | None = None,
    ) -> Relocated:
        """Replace the organization's database by the backup `dump`: restored into a fresh
        database on the same server, then switched to; the old database is dropped."""
        record = await self.check_ready(organization_id)
        server = self.tenants.server_of(record)

        async def copy(_old_url: str, spare: str, say: Step) -> None:
            await _say(say, "restoring the backup")
            await backups.restore_database(dump, server.database_url(spare))
            await _say(say, "migrating the restored database")
            await server.migrate(spare)

        return await self._relocate(record, server, copy, progress, verify=False)

    async def move(
        self, organization_id: uuid.UUID, server: str, *, progress: Step | None = None
    ) -> Relocated:
        """Copy the organization's database to `server` and serve it from there."""
        record = await self.check_ready(organization_id)
        target = self.target_server(record, server)

        async def copy(old_url: str, spare: str, say: Step) -> None:
            await _say(say, "dumping the database")
            dump = await backups.backup_database(old_url)
            try:
                await _say(say, f"restoring on {target.name} ({dump.size} bytes)")
                await backups.restore_database(dump, target.database_url(spare))
            finally:
                dump.discard()

        return await self._relocate(record, target, copy, progress, verify=True)

    async def _relocate(
        self,
        record: TenantDatabase,
        target: TenantServer,
        copy: Callable[[str, str, Step], Awaitable[None]],
        progress: Step | None,
        *,
        verify: bool,
    ) -> Relocated:
        started = time.monotonic()
        org = record.organization_id
        say: Step = progress if progress is not None else _quiet
        old_server = self.tenants.server_of(record)
        old_url = old_server.database_url(record.database)
        spare = f"{database_name(org)}x{secrets.token_hex(4)}"
        new_url = target.database_url(spare)

        await self._fence(org, target.name, spare)
        switched = False
        try:
            await _say(say, "writes refused")
            await self._every_process_has_seen_it()
            await _say(say, "waiting for writes in flight")
            await _drain(old_server, record.database)
            if not target.is_sqlite:  # SQLite: the restore makes the file itself
                await target.create_database(spare)
            await copy(old_url, spare, say)
            if verify:
                await _say(say, "comparing the copies")
                tables = sorted(tenant_database_tables())
                before = await backups.checksum_tables(old_url, tables)
                after = await backups.checksum_tables(new_url, tables)
                if before != after:
                    differ = sorted(t for t in tables if before.get(t) != after.get(t))
                    raise OperationFailed(
                        "the copy differs from the original in " + ", ".join(differ)
                    )
            await _say(say, "switching")
            await self._switch(record, target.name, spare)
            switched = True
        except BaseException as error:
            if not switched:
                await asyncio.shield(self._abandon(org))
                if isinstance(error, Exception) and not isinstance(error, OperationFailed):
                    raise OperationFailed(f"{type(error).__name__}: {error}") from error
            raise
        self.tenants.routing.forget(org)
        # Reads of processes that have not re-read the registry yet still go to the old
        # database (never written since the fence): it is dropped once they have.
        await self._every_process_has_seen_it()
        await _say(say, f"dropping the old database {record.database}")
        await self._drop_spare(org)
        return Relocated(org, target.name, spare, time.monotonic() - started)

    async def _every_process_has_seen_it(self) -> None:
        """Wait until every process's remembered location predates nothing older than the
        last registry change (TENANT_LOCATION_TTL_SECONDS, core/tenantdb.py)."""
        await asyncio.sleep(self.tenants.routing.location_ttl)

    async def _fence(self, org: uuid.UUID, server: str, spare: str) -> None:
        async with self.database.transaction() as session:
            done = await session.execute(
                update(TenantDatabase)
                .where(
                    TenantDatabase.organization_id == org,
                    TenantDatabase.state == TenantState.READY.value,
                    TenantDatabase.spare_database.is_(None),
                )
                .values(
                    state=TenantState.MOVING.value,
                    spare_server=server,
                    spare_database=spare,
                    last_error=None,
                    updated_at=utcnow(),
                )
            )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("The organization's database is not ready (another operation runs)")
        self.tenants.routing.forget(org)

    async def _switch(self, record: TenantDatabase, server: str, spare: str) -> None:
        async with self.database.transaction() as session:
            done = await session.execute(
                update(TenantDatabase)
                .where(
                    TenantDatabase.organization_id == record.organization_id,
                    TenantDatabase.state == TenantState.MOVING.value,
                    TenantDatabase.spare_server == server,
                    TenantDatabase.spare_database == spare,
                )
                .values(
                    state=TenantState.READY.value,
                    server=server,
                    database=spare,
                    spare_server=record.server,
                    spare_database=record.database,
                    updated_at=utcnow(),
                )
            )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise OperationFailed("the registry row changed during the operation (a repair?)")

    async def _abandon(self, org: uuid.UUID) -> None:
        """Back to `ready` on the old database; the half-made spare dropped."""
        async with self.database.session(write=False) as session:
            record = await session.get(TenantDatabase, org)
        if record is None or record.state != TenantState.MOVING.value:
            return
        await self._drop_spare(org)
        async with self.database.transaction() as session:
            await session.execute(
                update(TenantDatabase)
                .where(
                    TenantDatabase.organization_id == org,
                    TenantDatabase.state == TenantState.MOVING.value,
                )
                .values(state=TenantState.READY.value, updated_at=utcnow())
            )
        self.tenants.routing.forget(org)

    async def _drop_spare(self, org: uuid.UUID) -> None:
        async with self.database.session(write=False) as session:
            record = await session.get(TenantDatabase, org)
        if record is None or record.spare_server is None or record.spare_database is None:
            return
        server = self.tenants.servers.get(record.spare_server)
        if server is not None:
            url = server.database_url(record.spare_database)
            await self.tenants.routing.engines.release(url)
            await server.drop_database(record.spare_database)
            if server.is_sqlite:  # a restore killed midway leaves its hidden partial file
                target = server.path_of(record.spare_database)
                for partial in target.parent.glob(f".{target.name}.*.restoring"):
                    partial.unlink(missing_ok=True)
        async with self.database.transaction() as session:
            await session.execute(
                update(TenantDatabase)
                .where(
                    TenantDatabase.organization_id == org,
                    TenantDatabase.spare_database == record.spare_database,
                )
                .values(spare_server=None, spare_database=None, updated_at=utcnow())
            )

    async def repair_interrupted(self, org: uuid.UUID) -> str | None:
        """Finish what a killed restore or move left: `moving` → back to `ready` on the old
        database with the half-made copy dropped; `ready` with a spare → the old database
        a crash after the switch left is dropped. What was done, or None."""
        async with self.database.session(write=False) as session:
            record = await session.get(TenantDatabase, org)
        if record is None or record.spare_database is None:
            return None
        if record.state == TenantState.MOVING.value:
            await self._abandon(org)
            return f"interrupted operation undone; serving from {record.database}"
        if record.state == TenantState.READY.value:
            await self._drop_spare(org)
            return f"old database {record.spare_database} dropped"
        return None

    async def interrupted(self) -> list[uuid.UUID]:
        async with self.database.session(write=False) as session:
            found = await session.scalars(
                select(TenantDatabase.organization_id).where(
                    TenantDatabase.spare_database.is_not(None)
                )
            )
            return list(found)


# --- helpers ---------------------------------------------------------------------------------


async def _drain(server: TenantServer, database: str) -> None:
    """Wait until no transaction that has written is open on `database`."""
    deadline = time.monotonic() + DRAIN_SECONDS
    if server.is_sqlite:
        await asyncio.to_thread(_sqlite_write_barrier, server.path_of(database))
        return
    connection = await asyncpg.connect(server._admin_dsn())
    try:
        while True:
            writing = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL",
                database,
            )
            if not writing:
                return
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"{writing} write transaction(s) on {database} did not finish within "
                    f"{DRAIN_SECONDS:.0f} s"
                )
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


def _sqlite_write_barrier(path: Path) -> None:
    # BEGIN IMMEDIATE waits (busy timeout) for the writer in flight, then we let go at once.
    connection = sqlite3.connect(path, timeout=DRAIN_SECONDS, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()


async def _say(say: Step, message: str) -> None:
    result = say(message)
    if result is not None:
        await result


def _quiet(_message: str) -> None:
    return None


TENANT_OPERATIONS: Wired[TenantOperations] = Wired("tenant operations")
