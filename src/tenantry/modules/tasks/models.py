"""The `tasks` table: tenant rows inside a project, with a validated status workflow."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import (
    AuditColumns,
    Base,
    SoftDeletable,
    TenantOwned,
    Timestamped,
    UUIDPrimaryKey,
    Versioned,
)
from tenantry.core.indexes import list_indexes, trash_index, trigram_search_index


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    ARCHIVED = "archived"


class TaskPriority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


# API.md, "Task transitions": the only moves a task's status may make.
TRANSITIONS: dict[TaskStatus, tuple[TaskStatus, ...]] = {
    TaskStatus.TODO: (TaskStatus.IN_PROGRESS, TaskStatus.DONE, TaskStatus.ARCHIVED),
    TaskStatus.IN_PROGRESS: (TaskStatus.TODO, TaskStatus.DONE, TaskStatus.ARCHIVED),
    TaskStatus.DONE: (TaskStatus.IN_PROGRESS, TaskStatus.ARCHIVED),
    TaskStatus.ARCHIVED: (TaskStatus.TODO,),
}


class Task(UUIDPrimaryKey, TenantOwned, Timestamped, SoftDeletable, AuditColumns, Versioned, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("status IN ('todo', 'in_progress', 'done', 'archived')", name="status"),
        CheckConstraint("priority IN ('low', 'medium', 'high', 'urgent')", name="priority"),
        # One index per list path (docs/performance.md): filter, then sort key + id. On
        # MariaDB the counts of the cross-project lists also test `project_id` (the trash
        # filter): it is in those indexes there, so a count reads the index alone.
        *list_indexes("tasks", "created_at", "id", covering=["project_id"]),
        *list_indexes("tasks", "updated_at", "id"),
        *list_indexes("tasks", "title", "id"),
        *list_indexes("tasks", "due_date", "id"),
        *list_indexes("tasks", "project_id", "created_at", "id"),
        *list_indexes("tasks", "status", "created_at", "id", covering=["project_id"]),
        *list_indexes("tasks", "assignee_id", "created_at", "id", covering=["project_id"]),
        trash_index("tasks"),
        # `search=` on PostgreSQL, through revision 0016's function (docs/tenancy.md).
        trigram_search_index("tasks", "title", "description"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.TODO.value)
    priority: Mapped[str] = mapped_column(String(16), default=TaskPriority.MEDIUM.value)
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    due_date: Mapped[dt.date | None] = mapped_column(Date, default=None)

    @property
    def is_complete(self) -> bool:
        return self.status == TaskStatus.DONE
