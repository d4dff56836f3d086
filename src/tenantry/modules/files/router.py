"""Files endpoints (API.md, Jobs/exports/files): `/orgs/{orgId}/files`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.responses import Response, StreamingResponse

from tenantry.core.authz import require
from tenantry.core.errors import ValidationFailed
from tenantry.core.openapi import etag_response
from tenantry.core.responses import CursorPage, Envelope, Page, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute, end_transaction
from tenantry.core.tenancy import TenantContext
from tenantry.modules.files import service
from tenantry.modules.files.deps import FileDep, StorageDep, UploadSlotsDep, uploader_of
from tenantry.modules.files.multipart import MultipartUpload
from tenantry.modules.files.naming import content_disposition
from tenantry.modules.files.schemas import FileDetailOut, FileListQuery, FileOut
from tenantry.modules.plans.enforce import (
    check_limit,
    feature,
    lock_organization,
    subscription_of,
)
from tenantry.services import services_of

router = APIRouter(prefix="/orgs/{orgId}/files", tags=["files"], route_class=UnitOfWorkRoute)

Reader = Annotated[TenantContext, Depends(require("files:read"))]
Writer = Annotated[TenantContext, Depends(require("files:write"))]
Deleter = Annotated[TenantContext, Depends(require("files:delete"))]

MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,  # any other part is a 400
                    "properties": {"file": {"type": "string", "format": "binary", "minLength": 1}},
                },
                "example": {"file": "(the file's bytes, e.g. report.pdf)"},
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=MULTIPART_BODY,
    dependencies=[Depends(feature("fileStorage"))],
)
async def upload_file(
    request: Request,
    context: Writer,
    session: SessionDep,
    storage: StorageDep,
    slots: UploadSlotsDep,
) -> Envelope[FileOut]:
    """Upload one file (multipart field `file`); its type is detected from its bytes."""
    settings = services_of(request).settings
    org_id = context.organization_id
    subscription = subscription_of(context)
    form = MultipartUpload(request)  # 415 / 400 from the headers alone
    # An organization already at its quota is refused before its body is received.
    await check_limit(session, org_id, subscription, "storageBytes", adding=1, lock=False)
    async with slots.hold(uploader_of(context), org_id):
        # The body may take minutes: no connection, transaction or lock while it arrives.
        await end_transaction(session)
        upload = await form.open()
        incoming = service.IncomingFile(upload.filename, upload.declared_type, upload.chunks())
        policy = service.UploadPolicy(
            max_bytes=settings.max_upload_bytes,
            allowed_types=frozenset(settings.upload_allowed_types),
        )
        received = await service.receive_upload(storage, org_id, incoming, policy)
    service.discard_unless_committed(session, storage, received)
    # Then one short transaction: the organization locked (limit checks of the same
    # organization queue behind it), the row and usage written, the new bytes counted.
    await lock_organization(session, org_id)
    file = await service.record_upload(session, received)
    await check_limit(session, org_id, subscription, "storageBytes", adding=0, lock=False)
    return ok(FileOut.model_validate(file))


@router.get("")
async def list_files(
    _context: Reader, query: Annotated[FileListQuery, Query()], session: SessionDep
) -> Page[FileOut] | CursorPage[FileOut]:
    """The organization's files (search by filename; sort by createdAt, filename, size)."""
    if query.cursor is not None and query.sort_by != "createdAt":
        raise ValidationFailed(
            details=[{"field": "cursor", "message": "cursor pagination sorts by createdAt"}]
        )
    filters = service.file_filters(search=query.search)
    listing = await service.list_files(session, filters, query)
    return listing.as_page(FileOut)


@router.get("/{fileId}", responses=etag_response())
async def get_file(_context: Reader, file: FileDep, response: Response) -> Envelope[FileDetailOut]:
    """One file's metadata."""
    response.headers["ETag"] = f'"{file.version}"'
    return ok(FileDetailOut.model_validate(file))


@router.get(
    "/{fileId}/download",
    response_class=StreamingResponse,
    responses={
        200: {
            # The type detected at upload (UPLOAD_ALLOWED_TYPES), whatever it is.
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The bytes, as an attachment (`Content-Disposition`)",
            "headers": {
                "ETag": {"description": "The bytes' SHA-256", "schema": {"type": "string"}},
                "Content-Disposition": {"schema": {"type": "string"}},
            },
        }
    },
)
async def download_file(_context: Reader, file: FileDep, storage: StorageDep) -> Response:
    """The file's bytes, streamed as an attachment with the type detected at upload."""
    stream = await service.open_download(storage, file)
    media_type = file.content_type
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    return StreamingResponse(
        stream.__aiter__(),
        media_type=media_type,
        headers={
            "Content-Disposition": content_disposition(file.filename),
            "Content-Length": str(stream.size),
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{file.sha256}"',
            # Already as stored: the gzip middleware leaves it alone, Content-Length stays.
            "Content-Encoding": "identity",
        },
    )


@router.delete("/{fileId}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_file(
    context: Deleter, file: FileDep, session: SessionDep, storage: StorageDep
) -> None:
    """Delete a file (`files:delete`, or `files:delete:own` for the uploader's own files)."""
    await service.delete_file(session, storage, context, file)
