"""Jobs of the auth flows: the password-reset mail that `POST /auth/password/forgot` queues."""

from __future__ import annotations

from typing import Any

from tenantry.core.jobs import JobContext, JobError, job_handler
from tenantry.core.mail import open_job_payload
from tenantry.modules.auth.service import (
    PASSWORD_RESET_REQUEST,
    PasswordResetRequest,
    mail_password_reset,
)


@job_handler(PASSWORD_RESET_REQUEST, max_attempts=5)
async def send_password_reset(ctx: JobContext) -> dict[str, Any]:
    """Mail a reset link if an active account has the address; the result never says which."""
    try:
        request = PasswordResetRequest(
            **open_job_payload(ctx.session, str(ctx.payload["sealed"]), purpose=ctx.job_type)
        )
    except (KeyError, TypeError, ValueError):
        raise JobError("The request could not be read", retry=False) from None
    await mail_password_reset(ctx.session, request)
    return {}
