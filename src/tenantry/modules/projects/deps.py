"""Loading dependencies: the tenant-scoped project of the path, or 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path

from tenantry.core.authz import TenantSessionDep
from tenantry.modules.projects import service
from tenantry.modules.projects.models import Project

ProjectId = Annotated[uuid.UUID, Path(alias="projectId", description="The project's id")]


async def load_project(project_id: ProjectId, session: TenantSessionDep) -> Project:
    """The live project `projectId` of the request's organization (404 otherwise)."""
    return await service.get_project(session, project_id)


async def load_deleted_project(project_id: ProjectId, session: TenantSessionDep) -> Project:
    """The soft-deleted project `projectId` of the request's organization (404 otherwise)."""
    return await service.get_deleted_project(session, project_id)


ProjectDep = Annotated[Project, Depends(load_project)]
DeletedProjectDep = Annotated[Project, Depends(load_deleted_project)]
