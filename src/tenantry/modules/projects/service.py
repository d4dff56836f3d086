"""Project rules. The session is bound to the request's organization: no query here
filters by organization or `deleted_at` by hand (core/tenancy.py adds both)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.concurrency import Expectation, flush_versioned
from tenantry.core.db import utcnow
from tenantry.core.errors import NotFound
from tenantry.core.hotreads import HotRead, fetch_one
from tenantry.core.listing import (
    Listing,
    SortKey,
    created_at_key,
    list_rows,
    search_condition,
    updated_at_key,
)
from tenantry.core.tenancy import INCLUDE_DELETED, TenantContext, scoped_select
from tenantry.core.trash import require_trash_access
from tenantry.modules.audit.service import created, diff, record, snapshot
from tenantry.modules.projects.models import Project
from tenantry.modules.projects.schemas import ProjectCreate, ProjectListQuery, ProjectUpdate

AUDITED_FIELDS = ("name", "description", "status")

SORT_KEYS = (
    created_at_key(Project.created_at),
    updated_at_key(Project.updated_at),
    SortKey("name", Project.name),
)


async def create_project(session: AsyncSession, body: ProjectCreate) -> Project:
    project = Project(**body.model_dump())
    session.add(project)
    await session.flush()
    await record(session, "project.created", "project", project.id, created(_audited(project)))
    return project


def _audited(project: Project) -> dict[str, object]:
    return snapshot(project, AUDITED_FIELDS)


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise NotFound("Project not found")
    return project


PROJECT_BY_ID = HotRead(
    scoped_select(Project, where=(Project.__table__.c.id == bindparam("project_id"),))
)


async def read_project(session: AsyncSession, project_id: uuid.UUID) -> dict[str, Any]:
    """`get_project` for `GET /projects/{projectId}`: a row in one round trip, same 404."""
    row = await fetch_one(session, PROJECT_BY_ID, project_id=project_id)
    if row is None:
        raise NotFound("Project not found")
    return row


async def get_deleted_project(session: AsyncSession, project_id: uuid.UUID) -> Project:
    project = await session.scalar(
        select(Project)
        .where(Project.id == project_id, Project.deleted_at.is_not(None))
        .execution_options(**{INCLUDE_DELETED: True})
    )
    if project is None:
        raise NotFound("Project not found in the trash")
    return project


def _filtered(query: ProjectListQuery, context: TenantContext) -> Select[Project]:
    statement = select(Project)
    if query.deleted == "only":
        require_trash_access(context, "projects:delete")
        statement = statement.where(Project.deleted_at.is_not(None)).execution_options(
            **{INCLUDE_DELETED: True}
        )
    if query.status is not None:
        statement = statement.where(Project.status == query.status.value)
    return statement.where(*search_condition(query.search, Project.name, Project.description))


async def list_projects(
    session: AsyncSession, query: ProjectListQuery, context: TenantContext
) -> Listing[Project]:
    return await list_rows(
        session, _filtered(query, context), keys=SORT_KEYS, id_column=Project.id, query=query
    )


async def update_project(
    session: AsyncSession, project: Project, body: ProjectUpdate, expectation: Expectation
) -> Project:
    expectation.check(project.version)
    before = _audited(project)
    for field, value in body.model_dump(exclude_unset=True, exclude={"version"}).items():
        setattr(project, field, value)
    await flush_versioned(session, expectation)
    changes = diff(before, _audited(project))
    if changes:  # nothing changed: no UPDATE was sent, the version stays, nothing to audit
        await record(session, "project.updated", "project", project.id, changes)
    return project


async def delete_project(session: AsyncSession, project: Project) -> None:
    project.deleted_at = utcnow()  # `updated_by` is stamped by the tenancy layer
    await flush_versioned(session)
    changes = {"deleted_at": (None, project.deleted_at)}
    await record(session, "project.deleted", "project", project.id, changes)


async def restore_project(session: AsyncSession, project: Project) -> Project:
    changes = {"deleted_at": (project.deleted_at, None)}
    project.deleted_at = None
    await flush_versioned(session)
    await record(session, "project.restored", "project", project.id, changes)
    return project
