"""Email: Jinja2 templates rendered into `EmailMessage`s, sent by a backend chosen by `MAIL_URL`.

`file://DIR` (default `VAR_DIR/mail`) writes one `.eml` per message and logs the subject
and recipient; `smtp://user:pass@host:port?starttls=1` (or `smtps://`) sends with
aiosmtplib. Messages are sent from background jobs only (so a failure is retried):
`queue_email(session, to=..., template=..., context=...)` enqueues a `mail.send` job.
"""

from collections.abc import Mapping
from typing import Any

from tenantry.core.mail.backends import (
    FileMailer,
    MailDeliveryError,
    Mailer,
    SmtpMailer,
    create_mailer,
)
from tenantry.core.mail.outbox import bind_mail, open_job_payload, queue_email, seal_job_payload
from tenantry.core.mail.render import (
    TEMPLATES,
    InvalidAddress,
    render_email,
    validate_address,
)


async def send_email(mailer: Mailer, *, to: str, template: str, context: Mapping[str, Any]) -> None:
    """Render `template` for `to` and send it (what the `mail.send` job handler calls)."""
    await mailer.send(render_email(template, to, context))


__all__ = [
    "TEMPLATES",
    "FileMailer",
    "InvalidAddress",
    "MailDeliveryError",
    "Mailer",
    "SmtpMailer",
    "bind_mail",
    "create_mailer",
    "open_job_payload",
    "queue_email",
    "render_email",
    "seal_job_payload",
    "send_email",
    "validate_address",
]
