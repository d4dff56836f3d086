"""The `exports.build` job: the organization's data as one JSON file in storage.

It runs in the organization's tenant context (bound by `open_job_session`), streams the
document (document.py) to storage in batches, then adds the `files` row that makes it
listable and downloadable through the files API and counts it in the storage usage.

Idempotent: the object's key carries the job id and the attempt, and only the attempt
that commits `succeeded` keeps its row, so a job yields at most one file. A failed or
cancelled attempt removes its object again (after-rollback callback); a retry that finds
the job's file already recorded returns it instead of writing another.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from tenantry.core.jobs import JobContext, JobError, job_handler
from tenantry.core.routing import after_rollback
from tenantry.core.storage import check_key, storage_of
from tenantry.core.tenancy import INCLUDE_DELETED
from tenantry.modules.exports import document
from tenantry.modules.exports.service import JOB_TYPE, MAX_ATTEMPTS
from tenantry.modules.files.models import StoredFile
from tenantry.modules.files.service import add_stored_file

CONTENT_TYPE = "application/json"


@job_handler(JOB_TYPE, max_attempts=MAX_ATTEMPTS)
async def build_export(ctx: JobContext) -> dict[str, Any]:
    if ctx.organization_id is None:
        raise JobError("An export belongs to an organization.", retry=False)
    session = ctx.session
    org_id = ctx.organization_id
    prefix = f"orgs/{org_id}/exports/{ctx.job_id.hex}"
    existing = await session.scalar(
        select(StoredFile)
        .where(StoredFile.storage_key.startswith(prefix + "-"))
        .execution_options(**{INCLUDE_DELETED: True})
    )
    if existing is not None:  # an earlier run of this job recorded its file already
        return {"fileId": str(existing.id), "size": existing.size}

    header = await document.organization_header(session, org_id)
    totals = await document.count_rows(session, org_id)
    total = max(sum(totals.values()), 1)
    done = 0

    async def on_batch(rows: int, section: str) -> None:
        nonlocal done
        done += rows
        await ctx.report(min(done * 99 // total, 99), f"{done} of {total} rows ({section})")

    storage = storage_of(session)
    key = check_key(f"{prefix}-{ctx.attempt}.json")

    async def remove_object() -> None:
        await storage.delete(key)

    after_rollback(session, remove_object)
    await ctx.report(0, "exporting")
    chunks = document.stream_document(session, org_id, header, on_batch)
    stored = await storage.put(key, chunks, content_type=CONTENT_TYPE)
    await ctx.report(100, f"{done} rows exported")
    slug = header["organization"]["slug"]
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    file = await add_stored_file(
        session, stored, filename=f"export-{slug}-{day}.json", content_type=CONTENT_TYPE
    )
    return {"fileId": str(file.id), "size": stored.size, "rows": totals}
