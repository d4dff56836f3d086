"""Email goes out through durable jobs: `queue_email` now, the `mail.send` job later.

A request never waits for SMTP and a failed delivery is retried with back-off. The job
payload is sealed (AES-256-GCM, key derived from `SECRET_KEY`): links in the context
carry one-time tokens and the recipient is personal data, and neither may sit readable
in the `jobs` table. Only the template name stays in clear, for operators.

The mailer and the sealing key reach the handler through the database's sessions
(`bind_mail`, called by `create_app` and `tenantry worker`), like the job transport.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jinja2 import TemplateError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import Database, Wired, wiring_of
from tenantry.core.jobs import JobContext, JobError, enqueue, job_handler
from tenantry.core.mail.backends import Mailer
from tenantry.core.mail.render import InvalidAddress, render_email, validate_address

JOB_TYPE = "mail.send"
MAX_ATTEMPTS = 8
_NONCE_BYTES = 12


class PayloadSeal:
    """AES-256-GCM with a key derived (HKDF-SHA256) from the application secret."""

    def __init__(self, secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"tenantry mail payload"
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, value: Any, *, template: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), template.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, *, template: str) -> Any:
        raw = base64.urlsafe_b64decode(token.encode())
        plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], template.encode())
        return orjson.loads(plain)


@dataclass(frozen=True)
class MailBinding:
    mailer: Mailer
    seal: PayloadSeal


MAIL: Wired[MailBinding] = Wired("mail")


def bind_mail(database: Database, mailer: Mailer) -> None:
    """Every session of `database` can queue email (seal) and its jobs can send it (mailer)."""
    binding = MailBinding(mailer=mailer, seal=PayloadSeal(database.settings.secret()))
    database.wiring.provide(MAIL, binding)


def _binding(session: AsyncSession) -> MailBinding:
    binding = wiring_of(session).get(MAIL)
    if binding is None:
        raise RuntimeError("mail is not bound to this database: call bind_mail(database, mailer)")
    return binding


def seal_job_payload(session: AsyncSession, value: Any, *, purpose: str) -> str:
    """Seal `value` for another job's payload (personal data a request hands to a job).

    Same key as mail payloads; `purpose` (the job type) is the associated data, so a
    payload sealed for one job type does not open as another's.
    """
    return _binding(session).seal.seal(value, template=purpose)


def open_job_payload(session: AsyncSession, sealed: str, *, purpose: str) -> Any:
    """The value `seal_job_payload` sealed; `ValueError` when it cannot be opened."""
    try:
        return _binding(session).seal.open(sealed, template=purpose)
    except (ValueError, InvalidTag) as exc:
        raise ValueError("sealed payload cannot be opened (was SECRET_KEY changed?)") from exc


async def queue_email(
    session: AsyncSession,
    *,
    to: str,
    template: str,
    context: Mapping[str, Any],
    organization_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    """Enqueue `template` for `to` in the caller's transaction; returns the job id.

    The message is rendered once now, so a bad address (`InvalidAddress`, 400), an unknown
    template or a missing variable fails the request instead of a job later. Nothing is
    sent if the transaction rolls back.
    """
    address = validate_address(to)
    render_email(template, address, context)
    sealed = _binding(session).seal.seal(
        {"to": address, "context": dict(context)}, template=template
    )
    job = await enqueue(
        session,
        JOB_TYPE,
        {"template": template, "sealed": sealed},
        organization_id=organization_id,
        idempotency_key=idempotency_key,
    )
    return job.id


@job_handler(JOB_TYPE, max_attempts=MAX_ATTEMPTS)
async def send_queued_email(ctx: JobContext) -> dict[str, Any]:
    """Render and deliver one queued message (at least once: a retry may send it again)."""
    binding = _binding(ctx.session)
    template = str(ctx.payload.get("template", ""))
    try:
        content = binding.seal.open(str(ctx.payload["sealed"]), template=template)
    except (KeyError, ValueError, InvalidTag):
        raise JobError(
            "The email could not be read (was SECRET_KEY changed?)", retry=False
        ) from None
    try:
        message = render_email(template, content["to"], content["context"])
    except (InvalidAddress, ValueError, TemplateError) as exc:
        raise JobError("The email could not be prepared", retry=False) from exc
    await binding.mailer.send(message)  # MailDeliveryError → retried with back-off
    return {"template": template}
