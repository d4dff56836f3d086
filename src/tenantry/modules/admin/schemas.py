"""Bodies of the platform administration routes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field, model_validator

from tenantry.core.dates import IsoDate
from tenantry.core.responses import ListQuery, RequestSchema, Schema
from tenantry.modules.plans.schemas import PlanName, StatusName


class AdminOrgQuery(ListQuery):
    sort_fields = ("createdAt", "name", "trialEndsAt")

    plan: PlanName | None = None
    status: StatusName | None = None
    suspended: bool | None = None


class AdminOrgOut(Schema):
    id: uuid.UUID
    name: str
    slug: str
    plan: str
    status: str
    trial_ends_at: dt.datetime | None
    suspended_at: dt.datetime | None
    converted_at: dt.datetime | None
    expired_at: dt.datetime | None
    overrides: dict[str, Any] | None
    members: int
    storage_bytes: int
    created_at: dt.datetime


class StatsQuery(RequestSchema):
    from_: IsoDate | None = Field(default=None, alias="from")
    to: IsoDate | None = None

    @model_validator(mode="after")
    def _ordered(self) -> StatsQuery:
        if self.from_ and self.to and self.to < self.from_:
            raise ValueError("`to` must not be before `from`")
        return self


class StatsOut(Schema):
    from_: dt.date = Field(serialization_alias="from")
    to: dt.date
    trials_started: int
    trials_active: int
    converted: int
    expired: int
    conversion_rate: float | None
    paying: int
    suspended: int
