"""The plans, in one table (like roles): features and limits of each plan.

Change a plan here (and the README table "Plans and trials"); a platform admin can
override features or limits for one organization (`PUT /admin/orgs/{orgId}/subscription`
with `overrides`), e.g. an enterprise deal. A limit of `None` means unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FEATURES = ("apiKeys", "auditLog", "exports", "fileStorage")
LIMITS = ("members", "projects", "storageBytes", "apiRequestsPerMinute")

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    features: dict[str, bool]
    limits: dict[str, int | None]


def _plan(name: str, features: set[str], **limits: int | None) -> Plan:
    assert set(limits) == set(LIMITS), name
    return Plan(name, {f: f in features for f in FEATURES}, dict(limits))


_ALL = set(FEATURES)

PLANS: dict[str, Plan] = {
    p.name: p
    for p in (
        # A new organization's 30 days: the pro features, moderate limits.
        _plan(
            "trial",
            _ALL,
            members=10,
            projects=20,
            storageBytes=5 * GIB,
            apiRequestsPerMinute=300,
        ),
        _plan(
            "free",
            {"exports", "fileStorage"},
            members=3,
            projects=3,
            storageBytes=100 * MIB,
            apiRequestsPerMinute=60,
        ),
        _plan(
            "pro",
            _ALL,
            members=50,
            projects=500,
            storageBytes=100 * GIB,
            apiRequestsPerMinute=1200,
        ),
        _plan(
            "enterprise",
            _ALL,
            members=None,
            projects=None,
            storageBytes=None,
            apiRequestsPerMinute=6000,
        ),
    )
}


def check_overrides(value: dict[str, Any]) -> dict[str, Any]:
    """`{"features": {name: bool}, "limits": {name: int >= 0 | null}}`, nothing else."""
    unknown = set(value) - {"features", "limits"}
    if unknown:
        raise ValueError(f"unknown override section(s): {sorted(unknown)}")
    features = value.get("features", {})
    limits = value.get("limits", {})
    if not isinstance(features, dict) or not isinstance(limits, dict):
        raise ValueError("features and limits must be objects")
    for name, flag in features.items():
        if name not in FEATURES or not isinstance(flag, bool):
            raise ValueError(f"feature override {name!r} must be a known feature and a boolean")
    for name, limit in limits.items():
        if name not in LIMITS:
            raise ValueError(f"unknown limit {name!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ValueError(f"limit {name!r} must be an integer or null")
        if limit is not None and limit < 0:
            raise ValueError(f"limit {name!r} must not be negative")
    return {"features": dict(features), "limits": dict(limits)}


def effective(plan: str, overrides: dict[str, Any] | None) -> Plan:
    """The plan with an organization's overrides applied (an unknown plan reads as free)."""
    base = PLANS.get(plan, PLANS["free"])
    if not overrides:
        return base
    return Plan(
        base.name,
        {**base.features, **overrides.get("features", {})},
        {**base.limits, **overrides.get("limits", {})},
    )
