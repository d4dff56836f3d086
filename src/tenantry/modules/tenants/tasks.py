"""The jobs of the platform admin's tenant operations (router.py): backup, restore, move.

Each runs `TenantOperations` (operations.py), wired on the worker's database by
`TenantDatabases`; the job belongs to the organization (its members see it in
`/orgs/{orgId}/jobs`). A restore or move is not retried: a failed one has been undone
(the organization serves from its old database) and the operator decides what next.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select

from tenantry.core.db import wiring_of
from tenantry.core.jobs import JobContext, JobError, job_handler
from tenantry.core.routing import after_rollback
from tenantry.core.storage import storage_of
from tenantry.modules.files.models import StoredFile
from tenantry.modules.files.service import add_stored_file
from tenantry.modules.orgs.models import Organization
from tenantry.modules.tenants import backup as backups
from tenantry.modules.tenants.operations import (
    TENANT_OPERATIONS,
    OperationFailed,
    TenantOperations,
    is_backup_of,
)

BACKUP_JOB = "tenants.backup"
RESTORE_JOB = "tenants.restore"
MOVE_JOB = "tenants.move"


def _operations(ctx: JobContext) -> tuple[TenantOperations, uuid.UUID]:
    operations = wiring_of(ctx.session).get(TENANT_OPERATIONS)
    if operations is None:
        raise JobError("Tenant operations need TENANCY_MODE=database.", retry=False)
    if ctx.organization_id is None:
        raise JobError("A tenant operation belongs to an organization.", retry=False)
    return operations, ctx.organization_id


@job_handler(BACKUP_JOB, max_attempts=3)
async def back_up(ctx: JobContext) -> dict[str, Any]:
    """Dump the organization's database into storage and add the downloadable file."""
    operations, org = _operations(ctx)
    session = ctx.session
    await ctx.report(0, "dumping the database")
    dump = await operations.backup(org)
    try:
        storage = storage_of(session)
        await ctx.report(50, f"storing {dump.size} bytes")
        stored = await backups.store_backup(storage, dump, organization_id=org)
    finally:
        dump.discard()

    async def remove_object() -> None:
        await storage.delete(stored.key)

    after_rollback(session, remove_object)
    slug = await session.scalar(select(Organization.slug).where(Organization.id == org))
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    file = await add_stored_file(
        session,
        stored,
        filename=f"backup-{slug or org}-{day}.{dump.extension}",
        content_type=backups.BACKUP_CONTENT_TYPE,
    )
    await ctx.report(100, "backed up")
    return {"fileId": str(file.id), "size": stored.size}


async def backup_file(operations: TenantOperations, org: uuid.UUID, file_id: uuid.UUID) -> Any:
    """The live `files` row `file_id` of the organization if it is one of its backups."""
    engine = await operations.tenants.routing.engine_of(org)
    files = StoredFile.__table__
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(files.c.storage_key, files.c.sha256).where(
                    files.c.id == file_id,
                    files.c.organization_id == org,
                    files.c.deleted_at.is_(None),
                )
            )
        ).first()
    if row is None or not is_backup_of(org, row.storage_key):
        return None
    return row


@job_handler(RESTORE_JOB, max_attempts=1)
async def restore(ctx: JobContext) -> dict[str, Any]:
    """Restore a backup file of the organization into a fresh database and switch to it."""
    operations, org = _operations(ctx)
    file = await backup_file(operations, org, uuid.UUID(str(ctx.payload["fileId"])))
    if file is None:
        raise JobError("fileId is not a backup of this organization", retry=False)
    await ctx.report(0, "loading the backup")
    dump = await backups.load_backup(
        storage_of(ctx.session), file.storage_key, expected_sha256=file.sha256
    )
    try:
        done = await operations.restore(org, dump, progress=_reporter(ctx))
    except OperationFailed as error:
        raise JobError(f"Restore abandoned, nothing changed: {error}", retry=False) from error
    finally:
        dump.discard()
    await ctx.report(100, "restored")
    return {"server": done.server, "database": done.database}


@job_handler(MOVE_JOB, max_attempts=1)
async def move(ctx: JobContext) -> dict[str, Any]:
    """Copy the organization's database to another server and serve it from there."""
    operations, org = _operations(ctx)
    try:
        done = await operations.move(org, str(ctx.payload["server"]), progress=_reporter(ctx))
    except OperationFailed as error:
        raise JobError(f"Move abandoned, nothing changed: {error}", retry=False) from error
    await ctx.report(100, "moved")
    return {"server": done.server, "database": done.database}


def _reporter(ctx: JobContext) -> Any:
    steps = iter(range(10, 100, 10))

    async def say(message: str) -> None:
        await ctx.report(next(steps, 95), message)

    return say
