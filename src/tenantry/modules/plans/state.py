"""An organization's subscription as the request sees it (cached with the membership).

`effective_status(now)` is the check on access: a trial past its end reads as expired even
if the daily job has not run yet, so a missed run changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tenantry.modules.plans.catalog import Plan, effective

TRIALING = "trialing"
ACTIVE = "active"
EXPIRED = "expired"
CANCELED = "canceled"
STATUSES = (TRIALING, ACTIVE, EXPIRED, CANCELED)


@dataclass(frozen=True, slots=True)
class Subscription:
    plan: str
    status: str
    trial_ends_at: dt.datetime | None = None
    overrides: dict[str, Any] | None = None
    suspended: bool = False

    def effective_status(self, now: dt.datetime) -> str:
        if self.status == TRIALING and self.trial_ends_at is not None and self.trial_ends_at <= now:
            return EXPIRED
        return self.status

    def writable(self, now: dt.datetime) -> bool:
        return self.effective_status(now) in (TRIALING, ACTIVE)

    @property
    def terms(self) -> Plan:
        return effective(self.plan, self.overrides)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "status": self.status,
            "trialEndsAt": self.trial_ends_at.isoformat() if self.trial_ends_at else None,
            "overrides": self.overrides,
            "suspended": self.suspended,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Subscription:
        ends = value.get("trialEndsAt")
        return cls(
            plan=str(value["plan"]),
            status=str(value["status"]),
            trial_ends_at=dt.datetime.fromisoformat(ends) if ends else None,
            overrides=value.get("overrides"),
            suspended=bool(value.get("suspended")),
        )
