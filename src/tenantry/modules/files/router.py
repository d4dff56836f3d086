"""Files endpoints (API.md, Jobs/exports/files): `/orgs/{orgId}/files`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.responses import Response, StreamingResponse

from tenantry.core.authz import require
from tenantry.core.errors import ValidationFailed
from tenantry.core.responses import CursorPage, Envelope, Page, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.files import service
from tenantry.modules.files.deps import FileDep, StorageDep
from tenantry.modules.files.multipart import MultipartUpload
from tenantry.modules.files.naming import content_disposition
from tenantry.modules.files.schemas import FileDetailOut, FileListQuery, FileOut
from tenantry.modules.plans.enforce import check_limit, feature, limit, subscription_of

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
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=MULTIPART_BODY,
    dependencies=[Depends(feature("fileStorage")), Depends(limit("storageBytes"))],
)
async def upload_file(
    request: Request, context: Writer, session: SessionDep, storage: StorageDep
) -> Envelope[FileOut]:
    """Upload one file (multipart field `file`); its type is detected from its bytes."""
    settings = request.app.state.settings
    upload = await MultipartUpload(request).open()
    incoming = service.IncomingFile(upload.filename, upload.declared_type, upload.chunks())
    policy = service.UploadPolicy(
        max_bytes=settings.max_upload_bytes,
        allowed_types=frozenset(settings.upload_allowed_types),
    )
    file = await service.upload_file(session, storage, context, incoming, policy)
    # The new bytes counted too: past the limit, the transaction (and the object) is undone.
    await check_limit(
        session, context.organization_id, subscription_of(request), "storageBytes", adding=0
    )
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


@router.get("/{fileId}")
async def get_file(_context: Reader, file: FileDep, response: Response) -> Envelope[FileDetailOut]:
    """One file's metadata."""
    response.headers["ETag"] = f'"{file.version}"'
    return ok(FileDetailOut.model_validate(file))


@router.get(
    "/{fileId}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The bytes"}},
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
