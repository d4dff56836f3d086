"""Mail backends: `.eml` files (development) or SMTP via aiosmtplib (production)."""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog
import uuid_utils

from tenantry.config import Settings
from tenantry.core.mail.render import make_address

log = structlog.get_logger("tenantry.mail")
_TRUE = {"1", "true", "yes", "on"}


class MailDeliveryError(Exception):
    """The message could not be handed over; the job sending it is retried."""


class Mailer(ABC):
    def __init__(self, sender: Address) -> None:
        self.sender = sender

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` (its `From` defaults to `MAIL_FROM`)."""
        if message["From"] is None:
            message["From"] = self.sender
        if message["Message-ID"] is None:
            message["Message-ID"] = make_msgid(domain=self.sender.domain)
        if not message.get_all("To"):
            raise ValueError("the message has no recipient")
        await self._deliver(message)

    @abstractmethod
    async def _deliver(self, message: EmailMessage) -> None: ...

    async def close(self) -> None:
        """Release what the mailer holds (nothing for the built-in backends)."""
        return


class FileMailer(Mailer):
    """One `.eml` file per message under `directory`, plus a log line."""

    def __init__(self, directory: Path, sender: Address) -> None:
        super().__init__(sender)
        self.directory = directory

    async def _deliver(self, message: EmailMessage) -> None:
        path = await asyncio.to_thread(self._write, message.as_bytes())
        log.info("mail written", subject=message["Subject"], to=message["To"], path=str(path))

    def _write(self, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{uuid_utils.uuid7().hex}.eml"  # time-ordered: `ls` lists them in order
        partial = self.directory / f".{name}.partial"
        partial.write_bytes(data)
        final = self.directory / name
        os.replace(partial, final)  # readers never see half a message
        return final


class SmtpMailer(Mailer):
    def __init__(
        self,
        sender: Address,
        *,
        hostname: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        start_tls: bool = False,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(sender)
        self.hostname = hostname
        self.port = port
        self.username = username
        self.password = password
        self.use_tls = use_tls
        self.start_tls = start_tls
        self.timeout = timeout

    async def _deliver(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailDeliveryError(f"SMTP delivery failed: {type(exc).__name__}") from exc
        log.info("mail sent", subject=message["Subject"], to=message["To"])


def create_mailer(settings: Settings) -> Mailer:
    sender = make_address(settings.mail_from, settings.mail_from_name)
    url = urlsplit(settings.effective_mail_url)
    if url.scheme == "file":
        return FileMailer(Path(url.netloc + url.path), sender)
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    smtps = url.scheme == "smtps"
    return SmtpMailer(
        sender,
        hostname=url.hostname or "localhost",
        port=url.port or (465 if smtps else 587),
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        use_tls=smtps,
        start_tls=query.get("starttls", "0").lower() in _TRUE,
        timeout=float(query.get("timeout", "30")),
    )
