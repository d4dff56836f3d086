"""Loading dependencies of the files routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request

from tenantry.core.authz import TenantContextDep
from tenantry.core.routing import SessionDep
from tenantry.core.storage import Storage
from tenantry.core.tenancy import TenantContext
from tenantry.modules.files import service
from tenantry.modules.files.models import StoredFile
from tenantry.modules.files.slots import UploadSlots
from tenantry.services import services_of


async def get_storage(request: Request) -> Storage:
    return services_of(request).storage


async def get_upload_slots(request: Request) -> UploadSlots:
    return services_of(request).upload_slots


def uploader_of(context: TenantContext) -> uuid.UUID:
    """Whose upload counts against the per-user cap (an API key's uploads: its creator's)."""
    return context.user_id or context.api_key_id or context.organization_id


async def load_file(
    _context: TenantContextDep,
    session: SessionDep,
    file_id: Annotated[uuid.UUID, Path(alias="fileId", description="The file's id")],
) -> StoredFile:
    """The organization's file `fileId` (404 when missing, deleted or another tenant's)."""
    return await service.get_file(session, file_id)


StorageDep = Annotated[Storage, Depends(get_storage)]
FileDep = Annotated[StoredFile, Depends(load_file)]
UploadSlotsDep = Annotated[UploadSlots, Depends(get_upload_slots)]
