"""Project rules. The session is bound to the request's organization: no query here
filters by organization or `deleted_at` by hand (core/tenancy.py adds both)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.concurrency import Expectation, flush_versioned
from tenantry.core.db import utcnow
from tenantry.core.errors import NotFound
from tenantry.core.listing import (
    SortKey,
    created_at_key,
    keyset_page,
    offset_page,
    search_condition,
    sort_key,
    updated_at_key,
)
from tenantry.core.tenancy import INCLUDE_DELETED, TenantContext
from tenantry.core.trash import require_trash_access
from tenantry.modules.projects.models import Project
from tenantry.modules.projects.schemas import ProjectCreate, ProjectListQuery, ProjectUpdate

SORT_KEYS = (
    created_at_key(Project.created_at),
    updated_at_key(Project.updated_at),
    SortKey("name", Project.name),
)


async def create_project(session: AsyncSession, body: ProjectCreate) -> Project:
    project = Project(**body.model_dump())
    session.add(project)
    await session.flush()
    return project


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise NotFound("Project not found")
    return project


async def get_deleted_project(session: AsyncSession, project_id: uuid.UUID) -> Project:
    project = await session.scalar(
        select(Project)
        .where(Project.id == project_id, Project.deleted_at.is_not(None))
        .execution_options(**{INCLUDE_DELETED: True})
    )
    if project is None:
        raise NotFound("Project not found in the trash")
    return project


def _filtered(query: ProjectListQuery, context: TenantContext) -> Any:
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
) -> tuple[list[Project], int]:
    return await offset_page(
        session,
        _filtered(query, context),
        key=sort_key(SORT_KEYS, query.sort_by),
        id_column=Project.id,
        descending=query.sort_order == "desc",
        offset=query.offset,
        limit=query.limit,
    )


async def list_projects_after(
    session: AsyncSession, query: ProjectListQuery, context: TenantContext
) -> tuple[list[Project], str | None]:
    return await keyset_page(
        session,
        _filtered(query, context),
        key=sort_key(SORT_KEYS, query.sort_by),
        id_column=Project.id,
        descending=query.sort_order == "desc",
        cursor=query.cursor or "",
        limit=query.limit,
    )


async def update_project(
    session: AsyncSession, project: Project, body: ProjectUpdate, expectation: Expectation
) -> Project:
    expectation.check(project.version)
    for field, value in body.model_dump(exclude_unset=True, exclude={"version"}).items():
        setattr(project, field, value)
    await flush_versioned(session, expectation)
    return project


async def delete_project(session: AsyncSession, project: Project) -> None:
    project.deleted_at = utcnow()  # `updated_by` is stamped by the tenancy layer
    await flush_versioned(session)


async def restore_project(session: AsyncSession, project: Project) -> Project:
    project.deleted_at = None
    await flush_versioned(session)
    return project
