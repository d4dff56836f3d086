"""The one place identity flows send email (verify_email, password_reset, password_changed,
security_notice). Wiring the jobs module is a change to `send_auth_email` alone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.logging import get_logger
from tenantry.modules.users.models import User

log = get_logger("tenantry.auth.email")


def token_link(settings: Settings, path: str, token: str) -> str:
    return f"{settings.app_url}{path}?{urlencode({'token': token})}"


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
) -> str | None:
    """Queue `template` to `to` inside the caller's transaction; returns the job id.

    Until `tenantry.core.mail.queue_email` (durable jobs) is on main, the message is
    only announced in the log (never its context: it holds tokens) and no job id is
    returned.
    """
    log.info("auth_email_not_sent_jobs_module_missing", template=template)
    return None
