"""Subscription and usage bodies (API.md, "Plans, trials, usage")."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tenantry.core.dates import IsoDate, IsoDateTime
from tenantry.core.responses import RequestSchema, Schema
from tenantry.modules.plans.catalog import PLANS, check_overrides

PlanName = Literal["trial", "free", "pro", "enterprise"]
StatusName = Literal["trialing", "active", "expired", "canceled"]
assert set(PlanName.__args__) == set(PLANS)  # type: ignore[attr-defined]


class SubscriptionOut(Schema):
    plan: str
    status: str
    trial_ends_at: dt.datetime | None
    days_left: int | None
    features: dict[str, bool]
    limits: dict[str, int | None]
    usage: dict[str, int]


DEFAULT_USAGE_DAYS = 30


class UsageQuery(RequestSchema):
    """`from`/`to` (inclusive dates); by default the last 30 days up to today (UTC)."""

    from_: IsoDate | None = Field(default=None, alias="from")
    to: IsoDate | None = None

    @model_validator(mode="after")
    def _ordered(self) -> UsageQuery:
        self.to = self.to or dt.datetime.now(dt.UTC).date()
        self.from_ = self.from_ or self.to - dt.timedelta(days=DEFAULT_USAGE_DAYS - 1)
        if self.to < self.from_:
            raise ValueError("`to` must not be before `from`")
        if (self.to - self.from_).days > 366:
            raise ValueError("at most 366 days at once")
        return self

    @property
    def period(self) -> tuple[dt.date, dt.date]:
        if self.from_ is None or self.to is None:  # filled by the validator
            raise ValueError("period not resolved")
        return self.from_, self.to


class UsageDayOut(Schema):
    day: dt.date
    requests: int
    active_users: int
    records_created: int
    storage_bytes: int


class SetSubscription(RequestSchema):
    """What a payment provider's webhook (through a platform admin) sets."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"plan": "pro", "status": "active"}]})

    plan: PlanName
    status: StatusName
    trial_ends_at: IsoDateTime | None = None
    overrides: dict[str, Any] | None = None

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_overrides(value)

    @field_validator("trial_ends_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("trialEndsAt needs a time zone (e.g. Z)")
        return value
