"""Project request and response models (API.md, "Tenant resources")."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from tenantry.core.responses import ListQuery, RequestSchema, Schema
from tenantry.modules.projects.models import ProjectStatus

ProjectName = Annotated[str, Field(min_length=1, max_length=100)]
Description = Annotated[str, Field(max_length=10_000)]


class ProjectCreate(RequestSchema):
    """No `id`, `organizationId`, `createdBy`, `version`...: sending one is a 400."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "Website redesign", "description": "Q3 launch", "status": "active"}
            ]
        }
    )

    name: ProjectName
    description: Description | None = None
    status: ProjectStatus = ProjectStatus.ACTIVE


class ProjectUpdate(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Website redesign (v2)", "version": 1}]}
    )

    # Absent = unchanged; `null` is refused (and the document does not offer it).
    name: ProjectName | SkipJsonSchema[None] = None
    description: Description | None = None
    status: ProjectStatus | SkipJsonSchema[None] = None
    version: int | None = Field(
        default=None, ge=1, description="The version the change is based on"
    )

    @field_validator("name", "status", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value


class ProjectOut(Schema):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    description: str | None
    status: ProjectStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None
    version: int


class ProjectListQuery(ListQuery):
    sort_fields: ClassVar[tuple[str, ...]] = ("createdAt", "updatedAt", "name")

    status: ProjectStatus | None = None
    deleted: Literal["exclude", "only"] = "exclude"
