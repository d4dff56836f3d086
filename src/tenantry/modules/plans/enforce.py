"""Plan enforcement as dependencies: the subscription gate, `feature(...)`, `limit(...)`.

- `check_plan` is a step of the tenant gate (modules/orgs/gate.py, once per request
  under `/orgs/{orgId}/`): a suspended organization → 403 `organization_suspended`; an
  expired trial (or canceled subscription) → every mutating request 402 `trial_expired`
  (reads and exports keep working). The gate's next step is the plan's
  `apiRequestsPerMinute` per organization (apirate.py: 429 past it, other organizations
  unaffected). The subscription travels on the TenantContext (`subscription_of`).
- `Depends(feature("apiKeys"))` → 402 `feature_not_in_plan` unless the plan has it.
- `Depends(limit("projects"))` on a creation route → 402 `plan_limit_reached` with
  `details` {limit, used}. It locks the organization row (`SELECT ... FOR UPDATE` on
  PostgreSQL) until the request's transaction ends, so concurrent creations are counted
  one after the other and cannot exceed the limit.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.authz import TenantContextDep
from tenantry.core.errors import Forbidden, PaymentRequired
from tenantry.core.openapi import OpenAPIFacts
from tenantry.core.routing import SessionDep
from tenantry.core.tenancy import TenantContext
from tenantry.modules.orgs.models import Organization
from tenantry.modules.plans import counting
from tenantry.modules.plans.catalog import FEATURES, LIMITS
from tenantry.modules.plans.state import CANCELED, Subscription
from tenantry.services import services_of

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UPGRADE_HINT = "Upgrade to a paid plan to continue making changes: GET /orgs/{orgId}/subscription"
# Routes under /orgs/{orgId}/ that stay open to an expired organization: exporting data,
# and asking for an event-stream ticket (a POST that only opens a read).
ALWAYS_ALLOWED_SEGMENTS = frozenset({"exports", "events"})


def now(request: Request) -> dt.datetime:
    """The app's clock (`Services.clock`: tests move it forward)."""
    return services_of(request).clock.now()


def _always_allowed(request: Request, org_id: uuid.UUID) -> bool:
    path = request.url.path
    marker = f"/orgs/{org_id}/"
    _, found, rest = path.partition(marker)
    return bool(found) and rest.split("/", 1)[0] in ALWAYS_ALLOWED_SEGMENTS


def check_plan(
    request: Request, org_id: uuid.UUID, subscription: Subscription, at: dt.datetime
) -> None:
    """The organization-wide plan gate (suspension, expiry) of one request."""
    if subscription.suspended:
        raise Forbidden("This organization is suspended", code="organization_suspended")
    writing = request.method not in SAFE_METHODS and not _always_allowed(request, org_id)
    if writing and not subscription.writable(at):
        canceled = subscription.status == CANCELED
        raise PaymentRequired(
            "The subscription was canceled" if canceled else "The trial has expired",
            code="subscription_canceled" if canceled else "trial_expired",
            details={"upgrade": UPGRADE_HINT.replace("{orgId}", str(org_id))},
        )


def subscription_of(context: TenantContext) -> Subscription:
    """The plan state the gate put on `context`."""
    found = context.subscription
    if not isinstance(found, Subscription):
        raise RuntimeError("no subscription on the context: the tenant gate resolves it")
    return found


class Feature:
    """`Depends(feature("apiKeys"))`: 402 `feature_not_in_plan` unless the plan has it."""

    openapi_facts = OpenAPIFacts(errors={402: ("feature_not_in_plan",)})

    def __init__(self, name: str) -> None:
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}")
        self.name = name

    async def __call__(self, context: TenantContextDep) -> TenantContext:
        terms = subscription_of(context).terms
        if not terms.features.get(self.name, False):
            raise PaymentRequired(
                f"The {terms.name} plan does not include {self.name}",
                code="feature_not_in_plan",
                details={"feature": self.name, "plan": terms.name},
            )
        return context

    def __repr__(self) -> str:
        return f"feature({self.name!r})"


def feature(name: str) -> Feature:
    return Feature(name)


async def lock_organization(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Serialize limit checks of one organization until the transaction ends."""
    await session.execute(
        select(Organization.id).where(Organization.id == org_id).with_for_update()
    )


async def check_limit(
    session: AsyncSession,
    org_id: uuid.UUID,
    subscription: Subscription,
    name: str,
    adding: int = 1,
    *,
    lock: bool = True,
) -> None:
    """402 `plan_limit_reached` {limit, used} if `adding` more would exceed the limit.

    `lock=False` is an early look only (e.g. before an upload's body is received, when no
    lock may be held): the check that counts is the locked one in the writing transaction.
    """
    allowed = subscription.terms.limits.get(name)
    if allowed is None:
        return
    if lock:
        await lock_organization(session, org_id)
    used = await counting.used(session, org_id, name)
    if used is None:
        return
    if used + adding > allowed:
        raise PaymentRequired(
            f"The plan allows {allowed} {name}",
            code="plan_limit_reached",
            details={"limit": allowed, "used": used, "resource": name},
        )


class Limit:
    """`Depends(limit("projects"))` on a creation route."""

    openapi_facts = OpenAPIFacts(errors={402: ("plan_limit_reached",)})

    def __init__(self, name: str) -> None:
        if name not in LIMITS:
            raise ValueError(f"unknown limit {name!r}")
        self.name = name

    async def __call__(self, context: TenantContextDep, session: SessionDep) -> TenantContext:
        await check_limit(
            session, context.organization_id, subscription_of(context), self.name, adding=1
        )
        return context

    def __repr__(self) -> str:
        return f"limit({self.name!r})"


def limit(name: str) -> Limit:
    return Limit(name)


def describe(subscription: Subscription, at: dt.datetime) -> dict[str, Any]:
    terms = subscription.terms
    days_left = None
    if subscription.trial_ends_at is not None and subscription.effective_status(at) == "trialing":
        # Started days count as days left: a new 30-day trial says 30, its last hours say 1.
        days_left = max(0, math.ceil((subscription.trial_ends_at - at) / dt.timedelta(days=1)))
    return {
        "plan": subscription.plan,
        "status": subscription.effective_status(at),
        "trial_ends_at": subscription.trial_ends_at,
        "days_left": days_left,
        "features": dict(terms.features),
        "limits": dict(terms.limits),
    }


def subscription_from(org: Organization) -> Subscription:
    return Subscription(
        plan=org.plan,
        status=org.subscription_status,
        trial_ends_at=org.trial_ends_at,
        overrides=org.plan_overrides,
        suspended=org.suspended_at is not None,
    )


async def check_join(session: AsyncSession, org: Organization, at: dt.datetime) -> None:
    """Joining an organization (invitation accept) is a write under it and adds a member."""
    subscription = subscription_from(org)
    if subscription.suspended:
        raise Forbidden("This organization is suspended", code="organization_suspended")
    if not subscription.writable(at):
        raise PaymentRequired(
            "The trial has expired",
            code="trial_expired",
            details={"upgrade": UPGRADE_HINT.replace("{orgId}", str(org.id))},
        )
    await check_limit(session, org.id, subscription, "members")
