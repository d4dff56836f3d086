"""Files on the wire: the file object and the list query."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import ClassVar

from tenantry.core.responses import ListQuery, Schema


class FileOut(Schema):
    id: uuid.UUID
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: dt.datetime


class FileDetailOut(FileOut):
    organization_id: uuid.UUID
    created_by: uuid.UUID | None
    updated_at: dt.datetime
    version: int


class FileListQuery(ListQuery):
    """`search` matches the filename (case-insensitive substring)."""

    sort_fields: ClassVar[tuple[str, ...]] = ("createdAt", "filename", "size")
