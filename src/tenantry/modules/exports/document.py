"""The export document, written as a stream: one JSON object, its arrays filled batch by batch.

```json
{"format": "tenantry.export", "version": 1, "exportedAt": "...",
 "organization": {...}, "members": [...], "projects": [...], "tasks": [...], "files": [...]}
```

Each section is read with keyset pagination over `id` (`WHERE id > :last ORDER BY id
LIMIT :batch`), so the cost of a batch does not grow with depth and only one batch of
rows is ever in memory. The whole document is read in the job's one transaction (a
consistent snapshot on PostgreSQL). On SQLite that transaction holds the write lock, so
progress shows only at the end there (docs/jobs.md, "Progress").
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import utcnow
from tenantry.core.errors import NotFound
from tenantry.modules.files.models import StoredFile
from tenantry.modules.orgs.models import Membership, Organization
from tenantry.modules.projects.models import Project
from tenantry.modules.tasks.models import Task
from tenantry.modules.users.models import User

BATCH_SIZE = 1000
FORMAT_VERSION = 1

Row = dict[str, Any]
AnySelect = Select[*tuple[Any, ...]]
Progress = Callable[[int, str], Awaitable[None]]


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _member(row: Any) -> Row:
    membership, user = row
    return {
        "userId": str(membership.user_id),
        "email": user.email,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "role": membership.role,
        "joinedAt": _iso(membership.created_at),
    }


def _project(row: Any) -> Row:
    (project,) = row
    return {
        "id": str(project.id),
        "name": project.name,
        "description": project.description,
        "status": project.status,
        "createdAt": _iso(project.created_at),
        "updatedAt": _iso(project.updated_at),
        "createdBy": _str(project.created_by),
    }


def _task(row: Any) -> Row:
    (task,) = row
    return {
        "id": str(task.id),
        "projectId": str(task.project_id),
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": task.priority,
        "assigneeId": _str(task.assignee_id),
        "dueDate": _iso(task.due_date),
        "createdAt": _iso(task.created_at),
        "updatedAt": _iso(task.updated_at),
        "createdBy": _str(task.created_by),
    }


def _file(row: Any) -> Row:
    (file,) = row
    return {
        "id": str(file.id),
        "filename": file.filename,
        "contentType": file.content_type,
        "size": file.size,
        "sha256": file.sha256,
        "createdAt": _iso(file.created_at),
        "createdBy": _str(file.created_by),
    }


@dataclass(frozen=True)
class Section:
    """One array of the document: which rows (keyset on `key`), and how each is written."""

    name: str
    query: Callable[[uuid.UUID], AnySelect]
    key: Any
    render: Callable[[Any], Row]


# Projects, tasks and files are tenant-owned: the session's tenant criteria scope them to
# the organization and hide soft-deleted rows; the explicit organization filter says so
# again. Tasks of a project in the trash are left out, as the API hides them.
SECTIONS: tuple[Section, ...] = (
    Section(
        "members",
        lambda org: (
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == org)
        ),
        Membership.id,
        _member,
    ),
    Section(
        "projects",
        lambda org: select(Project).where(Project.organization_id == org),
        Project.id,
        _project,
    ),
    Section(
        "tasks",
        lambda org: (
            select(Task)
            .join(Project, Project.id == Task.project_id)
            .where(Task.organization_id == org)
        ),
        Task.id,
        _task,
    ),
    Section(
        "files",
        lambda org: select(StoredFile).where(StoredFile.organization_id == org),
        StoredFile.id,
        _file,
    ),
)


async def count_rows(session: AsyncSession, org_id: uuid.UUID) -> dict[str, int]:
    """How many rows each section will hold (for progress)."""
    counts = {}
    for section in SECTIONS:
        query = section.query(org_id).with_only_columns(func.count(section.key))
        counts[section.name] = int(await session.scalar(query) or 0)
    return counts


async def organization_header(session: AsyncSession, org_id: uuid.UUID) -> Row:
    org = await session.get(Organization, org_id)
    if org is None or org.deleted_at is not None:
        raise NotFound("Organization not found")
    return {
        "format": "tenantry.export",
        "version": FORMAT_VERSION,
        "exportedAt": _iso(utcnow()),
        "organization": {
            "id": str(org.id),
            "name": org.name,
            "slug": org.slug,
            "plan": org.plan,
            "createdAt": _iso(org.created_at),
        },
    }


async def batches(
    session: AsyncSession, section: Section, org_id: uuid.UUID, batch_size: int
) -> AsyncIterator[Sequence[Any]]:
    """The section's rows, `batch_size` at a time, in `id` order (keyset, not offset)."""
    last: uuid.UUID | None = None
    while True:
        query = section.query(org_id)
        if last is not None:
            query = query.where(section.key > last)
        rows = (await session.execute(query.order_by(section.key).limit(batch_size))).all()
        if not rows:
            return
        yield rows
        if len(rows) < batch_size:
            return
        last = rows[-1][0].id


async def stream_document(
    session: AsyncSession,
    org_id: uuid.UUID,
    header: Row,
    on_batch: Progress,
    *,
    batch_size: int | None = None,
) -> AsyncIterator[bytes]:
    """The whole document as byte chunks, one chunk per batch of rows."""
    size = batch_size or BATCH_SIZE
    opening = orjson.dumps(header)
    yield opening[:-1]  # the header object, left open for the sections
    for section in SECTIONS:
        yield b',"' + section.name.encode() + b'":['
        first = True
        async for rows in batches(session, section, org_id, size):
            parts = [orjson.dumps(section.render(row)) for row in rows]
            yield (b"" if first else b",") + b",".join(parts)
            first = False
            await on_batch(len(rows), section.name)
        yield b"]"
    yield b"}"
