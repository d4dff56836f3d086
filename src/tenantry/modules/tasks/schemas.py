"""Task request and response models (API.md, "Tenant resources")."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from tenantry.core.dates import IsoDate
from tenantry.core.responses import ListQuery, RequestSchema, Schema
from tenantry.modules.tasks.models import TaskPriority, TaskStatus

Title = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=10_000)]
MAX_BULK_IDS = 100


class TaskCreate(RequestSchema):
    """No `id`, `organizationId`, `projectId`, `createdBy`, `version`...: sending one is a 400."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"title": "Write the launch post", "priority": "high", "dueDate": "2026-12-31"}
            ]
        }
    )

    title: Title
    description: Description | None = None
    status: TaskStatus = TaskStatus.TODO
    priority: TaskPriority = TaskPriority.MEDIUM
    assignee_id: uuid.UUID | None = None
    due_date: IsoDate | None = None


class TaskChanges(RequestSchema):
    """The fields a PATCH (or a bulk update) may change; absent fields stay as they are."""

    # Absent = unchanged; `null` is refused (and the document does not offer it).
    status: TaskStatus | SkipJsonSchema[None] = None
    priority: TaskPriority | SkipJsonSchema[None] = None
    assignee_id: uuid.UUID | None = None
    due_date: IsoDate | None = None

    @field_validator("status", "priority", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value


class TaskUpdate(TaskChanges):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "in_progress", "version": 1}]}
    )

    title: Title | SkipJsonSchema[None] = None
    description: Description | None = None
    version: int | None = Field(
        default=None, ge=1, description="The version the change is based on"
    )

    @field_validator("title", mode="before")
    @classmethod
    def _title_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value


class TaskOut(Schema):
    id: uuid.UUID
    organization_id: uuid.UUID
    project_id: uuid.UUID
    title: str
    description: str | None
    status: TaskStatus
    priority: TaskPriority
    assignee_id: uuid.UUID | None
    due_date: dt.date | None
    is_complete: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None
    version: int


class TaskListQuery(ListQuery):
    """Tasks of one project."""

    sort_fields: ClassVar[tuple[str, ...]] = ("createdAt", "updatedAt", "title", "dueDate")

    status: TaskStatus | None = None
    assignee_id: uuid.UUID | None = None
    due_before: IsoDate | None = Field(default=None, description="Due strictly before this day")
    deleted: Literal["exclude", "only"] = "exclude"


class OrgTaskListQuery(TaskListQuery):
    """Tasks across the organization's projects."""

    project_id: uuid.UUID | None = None


class BulkUpdate(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"ids": ["0193f5a2-8c1e-7d3a-9b2f-4e5d6c7b8a90"], "changes": {"status": "done"}}
            ]
        }
    )

    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BULK_IDS)
    changes: TaskChanges = Field(json_schema_extra={"minProperties": 1})  # see below

    @field_validator("changes", mode="after")
    @classmethod
    def _something_to_change(cls, value: TaskChanges) -> TaskChanges:
        if not value.model_fields_set:
            raise ValueError("name at least one field to change")
        return value


class BulkFailure(Schema):
    id: uuid.UUID
    code: str


class BulkResult(Schema):
    updated: list[uuid.UUID]
    failed: list[BulkFailure]
