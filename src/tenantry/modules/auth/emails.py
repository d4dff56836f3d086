"""The one place identity flows send email (verify_email, password_reset, password_changed,
security_notice): through `queue_email`, a durable job committed with the flow's changes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.mail import queue_email
from tenantry.modules.users.models import User


def token_link(settings: Settings, path: str, token: str) -> str:
    return link_with_token(settings.app_url, path, token)


def link_with_token(app_url: str, path: str, token: str) -> str:
    return f"{app_url}{path}?{urlencode({'token': token})}"


def greeting_context(user: User) -> dict[str, Any]:
    return {"name": user.first_name or ""}


def duration_text(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "1 hour" if hours == 1 else f"{hours} hours"
    minutes = seconds // 60
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


async def send_auth_email(
    session: AsyncSession, *, to: str, template: str, context: dict[str, Any]
) -> str:
    """Queue `template` to `to` inside the caller's transaction; returns the job id.

    The job payload is sealed by the mail module (the links carry one-time tokens).
    """
    job_id = await queue_email(session, to=to, template=template, context=context)
    return str(job_id)
