"""Loading dependencies: the tenant-scoped task of the path (inside its project), or 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path

from tenantry.core.authz import TenantSessionDep
from tenantry.core.routing import SessionDep
from tenantry.modules.projects.deps import ProjectDep, ProjectId
from tenantry.modules.tasks import service
from tenantry.modules.tasks.models import Task

TaskId = Annotated[uuid.UUID, Path(alias="taskId", description="The task's id")]


async def load_task(task_id: TaskId, project_id: ProjectId, session: TenantSessionDep) -> Task:
    """The live task `taskId` of the live project `projectId` (404 otherwise), one query."""
    return await service.find_task(session, project_id, task_id)


async def load_deleted_task(task_id: TaskId, project: ProjectDep, session: SessionDep) -> Task:
    """The soft-deleted task `taskId` of the live project `projectId` (404 otherwise)."""
    return await service.get_deleted_task(session, project, task_id)


TaskDep = Annotated[Task, Depends(load_task)]
DeletedTaskDep = Annotated[Task, Depends(load_deleted_task)]
