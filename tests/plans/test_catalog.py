"""The plan table and per-organization overrides."""

from __future__ import annotations

import datetime as dt

import pytest

from tenantry.modules.plans.catalog import FEATURES, LIMITS, PLANS, check_overrides, effective
from tenantry.modules.plans.state import Subscription


def test_every_plan_names_every_feature_and_limit() -> None:
    assert set(PLANS) == {"trial", "free", "pro", "enterprise"}
    for plan in PLANS.values():
        assert set(plan.features) == set(FEATURES)
        assert set(plan.limits) == set(LIMITS)


def test_the_trial_has_the_pro_features() -> None:
    assert PLANS["trial"].features == PLANS["pro"].features


def test_overrides_replace_only_what_they_name() -> None:
    plan = effective("free", {"features": {"apiKeys": True}, "limits": {"projects": None}})
    assert plan.features["apiKeys"] is True
    assert plan.features["auditLog"] is False
    assert plan.limits["projects"] is None
    assert plan.limits["members"] == PLANS["free"].limits["members"]


@pytest.mark.parametrize(
    "value",
    [
        {"seats": {}},
        {"features": {"sso": True}},
        {"features": {"apiKeys": 1}},
        {"limits": {"members": True}},
        {"limits": {"members": "3"}},
        {"limits": {"members": -1}},
        {"features": []},
    ],
)
def test_bad_overrides_are_refused(value: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        check_overrides(value)


def test_a_trial_past_its_end_reads_as_expired_and_not_writable() -> None:
    end = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    sub = Subscription(plan="trial", status="trialing", trial_ends_at=end)
    assert sub.effective_status(end - dt.timedelta(seconds=1)) == "trialing"
    assert sub.writable(end - dt.timedelta(seconds=1))
    assert sub.effective_status(end) == "expired"
    assert not sub.writable(end)
    assert Subscription(plan="pro", status="active", trial_ends_at=end).writable(end)
