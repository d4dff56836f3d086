"""The trial lifecycle run by the daily job: expire past-due trials, send the trial emails.

Expiry is also checked on every access (state.py), so this job only makes it durable
(status, `expired_at` for the statistics) and mails. Emails go to the organization's
owners at 7 days left, 1 day left and on expiry, each under the idempotency key
`trial:<org>:<kind>:<user>`: however often the job runs, each is queued once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.dml import update_returning
from tenantry.core.mail import queue_email
from tenantry.core.permissions import Role
from tenantry.modules.orgs.models import Membership, Organization
from tenantry.modules.plans.state import EXPIRED, TRIALING
from tenantry.modules.users.models import User

REMINDER_DAYS = (7, 1)
# Expiry emails are sent to organizations that expired at most this long ago.
EXPIRY_MAIL_WINDOW = dt.timedelta(days=7)


async def expire_trials(session: AsyncSession, now: dt.datetime) -> int:
    result = await update_returning(
        session,
        Organization,
        [
            Organization.subscription_status == TRIALING,
            Organization.trial_ends_at <= now,
            Organization.deleted_at.is_(None),
        ],
        {"subscription_status": EXPIRED, "expired_at": now},
        [Organization.id],
    )
    return len(result.all())


async def _owners(session: AsyncSession, org_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    rows = await session.execute(
        select(User.id, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == org_id, Membership.role == Role.OWNER.value)
    )
    return [(user_id, email) for user_id, email in rows.all()]


def reminder_kind(ends_at: dt.datetime, now: dt.datetime) -> int | None:
    """7 when at most 7 days are left, 1 when at most 1 day is (None: not yet, or over)."""
    left = ends_at - now
    if left <= dt.timedelta(0):
        return None
    for days in sorted(REMINDER_DAYS):
        if left <= dt.timedelta(days=days):
            return days
    return None


async def _mail(
    session: AsyncSession, org: Organization, kind: str, template: str, context: dict[str, Any]
) -> int:
    sent = 0
    for user_id, email in await _owners(session, org.id):
        await queue_email(
            session,
            to=email,
            template=template,
            context={"organization": org.name, **context},
            organization_id=org.id,
            idempotency_key=f"trial:{org.id}:{kind}:{user_id}",
        )
        sent += 1
    return sent


async def send_trial_emails(session: AsyncSession, now: dt.datetime) -> int:
    sent = 0
    horizon = now + dt.timedelta(days=max(REMINDER_DAYS))
    ending = await session.scalars(
        select(Organization).where(
            Organization.subscription_status == TRIALING,
            Organization.trial_ends_at > now,
            Organization.trial_ends_at <= horizon,
            Organization.deleted_at.is_(None),
        )
    )
    for org in ending.all():
        assert org.trial_ends_at is not None
        days = reminder_kind(org.trial_ends_at, now)
        if days is not None:
            context = {"days_left": days, "trial_ends_at": org.trial_ends_at.isoformat()}
            sent += await _mail(session, org, f"{days}d", "trial_ending", context)
    expired = await session.scalars(
        select(Organization).where(
            Organization.subscription_status == EXPIRED,
            Organization.expired_at >= now - EXPIRY_MAIL_WINDOW,
            Organization.deleted_at.is_(None),
        )
    )
    for org in expired.all():
        sent += await _mail(session, org, "expired", "trial_expired", {})
    return sent


async def run_trial_lifecycle(session: AsyncSession, now: dt.datetime) -> dict[str, Any]:
    expired = await expire_trials(session, now)
    emails = await send_trial_emails(session, now)
    return {"expired": expired, "emails": emails}
