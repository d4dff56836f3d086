"""Files: upload (streamed, sniffed, size-limited), list, get, open for download, delete.

An upload is received first — its bytes streamed to storage under a server-made key,
with no database transaction open — and recorded second, in one short transaction. If
that transaction does not commit (over the quota, any error), an `after_rollback`
callback deletes the object again, so storage keeps no object without a row. A delete is
a soft delete of the row (it stays for the audit trail) and frees the organization's
usage; the object itself is removed from storage once the delete has committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from tenantry.core.authz import authorize_row
from tenantry.core.db import utcnow
from tenantry.core.errors import NotFound, UnsupportedMediaType, ValidationFailed
from tenantry.core.listing import Listing, SortKey, created_at_key, list_rows
from tenantry.core.responses import ListQuery
from tenantry.core.routing import after_commit, after_rollback
from tenantry.core.storage import ObjectStream, Storage, StoredObject, make_key
from tenantry.core.tenancy import TenantContext
from tenantry.modules.audit.service import created, deleted, record
from tenantry.modules.files.models import StoredFile
from tenantry.modules.files.naming import display_filename
from tenantry.modules.files.sniffing import SNIFF_BYTES, TEXT_TYPES, TextCheck, sniff
from tenantry.modules.files.usage import change_usage

log = logging.getLogger("tenantry.files")

SORT_KEYS = (
    created_at_key(StoredFile.created_at),
    SortKey("filename", StoredFile.filename),
    SortKey("size", StoredFile.size, int),
)


@dataclass(frozen=True)
class IncomingFile:
    """An upload as it arrives: the client's name and type (hints only) and its bytes."""

    filename: str
    declared_type: str | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class UploadPolicy:
    max_bytes: int
    allowed_types: frozenset[str]


@dataclass(frozen=True)
class ReceivedFile:
    """An upload whose bytes are in storage and whose row is not written yet."""

    stored: StoredObject
    filename: str
    content_type: str


async def receive_upload(
    storage: Storage, org_id: uuid.UUID, incoming: IncomingFile, policy: UploadPolicy
) -> ReceivedFile:
    """Stream `incoming` into storage; 413 / 415 / 400 before anything stays.

    Called with no transaction open: the body may take as long as the body deadline
    allows. The object is not anyone's file until `record_upload` writes its row.
    """
    filename = display_filename(incoming.filename)
    head, rest = await _read_head(incoming.chunks)
    if not head:
        raise ValidationFailed(details=[{"field": "file", "message": "The file is empty"}])
    content_type = sniff(head, declared=incoming.declared_type, filename=filename)
    if content_type not in policy.allowed_types:
        raise UnsupportedMediaType(
            f"Files of type {content_type} are not accepted",
            details=[{"field": "file", "message": f"detected type {content_type}"}],
        )
    key = make_key("orgs", str(org_id), "files")
    body = _checked_text(head, rest) if content_type in TEXT_TYPES else _chain(head, rest)
    stored = await storage.put(key, body, max_bytes=policy.max_bytes, content_type=content_type)
    return ReceivedFile(stored=stored, filename=filename, content_type=content_type)


def discard_unless_committed(
    session: AsyncSession, storage: Storage, received: ReceivedFile
) -> None:
    """Delete the received object again if the transaction recording it does not commit."""
    key = received.stored.key

    async def remove_orphan() -> None:
        await storage.delete(key)
        log.info("removed the stored object of a rolled-back upload", extra={"key": key})

    after_rollback(session, remove_orphan)


async def record_upload(session: AsyncSession, received: ReceivedFile) -> StoredFile:
    """The row of a received upload, in the caller's (short) transaction."""
    return await add_stored_file(
        session, received.stored, filename=received.filename, content_type=received.content_type
    )


async def add_stored_file(
    session: AsyncSession, stored: StoredObject, *, filename: str, content_type: str
) -> StoredFile:
    """The `files` row of an object already in storage: usage counted, creation audited.

    For uploads and for files the server makes itself (exports), so every file is listed,
    downloadable and counted the same way.
    """
    file = StoredFile(
        filename=filename,
        content_type=content_type,
        size=stored.size,
        sha256=stored.sha256,
        storage_key=stored.key,
    )
    session.add(file)
    await change_usage(session, bytes_delta=stored.size, files_delta=1)
    await session.flush()
    await record(session, "file.created", "file", file.id, created(_audited(file)))
    return file


def _audited(file: StoredFile) -> dict[str, object]:
    return {
        "filename": file.filename,
        "content_type": file.content_type,
        "size": file.size,
        "sha256": file.sha256,
    }


async def _read_head(chunks: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first `SNIFF_BYTES` (or fewer: the whole file) and the iterator of the rest."""
    head = bytearray()
    while len(head) < SNIFF_BYTES:
        try:
            head += await anext(chunks)
        except StopAsyncIteration:
            break
    return bytes(head), chunks


async def _chain(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


async def _checked_text(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The text upload's bytes, refused (415) as soon as they stop being text."""
    check = TextCheck()
    async for chunk in _chain(head, rest):
        if not check.feed(chunk):
            raise UnsupportedMediaType("The file starts as text but contains binary data")
        yield chunk
    if not check.feed(b"", final=True):
        raise UnsupportedMediaType("The file ends inside a UTF-8 character")


def file_filters(*, search: str | None) -> list[ColumnElement[bool]]:
    if not search:
        return []
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return [func.lower(StoredFile.filename).like(f"%{escaped.lower()}%", escape="\\")]


async def list_files(
    session: AsyncSession, filters: Sequence[ColumnElement[bool]], query: ListQuery
) -> Listing[StoredFile]:
    """Offset pages on any sort key, keyset pages (a `cursor`) on `(createdAt, id)`."""
    return await list_rows(
        session,
        select(StoredFile).where(*filters),
        keys=SORT_KEYS,
        id_column=StoredFile.id,
        query=query,
    )


async def get_file(session: AsyncSession, file_id: uuid.UUID) -> StoredFile:
    """The organization's live file `file_id`, or 404 (also for another organization's id)."""
    file = await session.scalar(select(StoredFile).where(StoredFile.id == file_id))
    if file is None:
        raise NotFound("File not found")
    return file


async def open_download(storage: Storage, file: StoredFile) -> ObjectStream:
    return await storage.get(file.storage_key)


async def delete_file(
    session: AsyncSession, storage: Storage, context: TenantContext, file: StoredFile
) -> None:
    """Soft-delete `file` (`files:delete`, or `files:delete:own` for the uploader)."""
    authorize_row(context, "files:delete", created_by=file.created_by)
    file.deleted_at = utcnow()
    try:
        await session.flush()  # UPDATE ... WHERE version = :seen
    except StaleDataError:
        raise NotFound("File not found") from None  # deleted by a concurrent request
    await change_usage(session, bytes_delta=-file.size, files_delta=-1)
    await record(session, "file.deleted", "file", file.id, deleted(_audited(file)))
    key = file.storage_key

    async def remove_object() -> None:
        await storage.delete(key)

    after_commit(session, remove_object)
