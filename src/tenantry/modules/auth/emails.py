"""The one place identity flows send email (verify_email, password_reset, password_changed,
security_notice). Wiring the mail module is a change to `send_auth_email` alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.logging import get_logger

log = get_logger("tenantry.auth.email")


async def send_auth_email(
    session: AsyncSession, *, to: str, template: str, context: dict[str, Any]
) -> str | None:
    """Queue `template` to `to` inside the caller's transaction; returns the job id.

    Until `tenantry.core.mail.queue_email` exists, the message is only announced in the
    log (never its context: it holds tokens) and no job id is returned.
    """
    log.info("auth_email_not_sent_mail_module_missing", template=template)
    return None
