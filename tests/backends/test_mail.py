"""Email: templates, header-injection safety, the file backend and SMTP against a real aiosmtpd."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword

from tenantry.core.mail import (
    TEMPLATES,
    FileMailer,
    InvalidAddress,
    MailDeliveryError,
    SmtpMailer,
    create_mailer,
    render_email,
    send_email,
)
from tenantry.services import services_of

CONTEXTS: dict[str, dict[str, Any]] = {
    "verify_email": {
        "name": "Ada",
        "link": "https://app.example.com/verify?t=abc",
        "expires_in": "24 hours",
    },
    "password_reset": {"link": "https://app.example.com/reset?t=abc", "expires_in": "1 hour"},
    "invitation": {
        "inviter_name": "Grace",
        "organization_name": "Acme",
        "role": "admin",
        "link": "https://app.example.com/invitations/abc",
    },
    "trial_ending": {"organization": "Acme", "days_left": "7", "trial_ends_at": "2026-12-01"},
    "trial_expired": {"organization": "Acme"},
    "password_changed": {"name": "Ada", "changed_at": "2026-11-23 06:30 UTC", "ip": "203.0.113.9"},
    "security_notice": {"event": "two-factor authentication was turned off", "ip": "203.0.113.9"},
}


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_a_subject_a_text_and_an_html_part(template: str) -> None:
    context = CONTEXTS[template]
    message = render_email(template, "user@example.com", context)
    text, html = parts(message)
    assert message["Subject"]
    assert message["To"] == "user@example.com"
    for value in context.values():
        assert value in text
        assert value in html
    assert html.lstrip().startswith("<!doctype html>")


def test_an_unknown_template_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown email template"):
        render_email("welcome_bonus", "user@example.com", {})


def test_a_missing_required_variable_fails_loudly_instead_of_sending_a_blank() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_email("password_reset", "user@example.com", {"expires_in": "1 hour"})


def test_context_values_are_escaped_in_html_but_not_in_plain_text() -> None:
    context = {**CONTEXTS["invitation"], "organization_name": "<script>alert(1)</script>"}
    text, html = parts(render_email("invitation", "user@example.com", context))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<script>alert(1)</script>" in text


@pytest.mark.parametrize(
    "address",
    [
        "victim@example.com\r\nBcc: everyone@example.com",
        "victim@example.com, other@example.com",
        "Victim <victim@example.com>",
        "not-an-address",
        "",
    ],
)
def test_a_recipient_that_is_not_exactly_one_address_is_refused(address: str) -> None:
    with pytest.raises(InvalidAddress):
        render_email("password_reset", address, CONTEXTS["password_reset"])


def test_line_breaks_in_context_cannot_add_headers_through_the_subject() -> None:
    context = {**CONTEXTS["invitation"], "organization_name": "Acme\r\nBcc: evil@example.com"}
    message = render_email("invitation", "user@example.com", context)
    headers = message.as_bytes().split(b"\n\n", 1)[0]
    assert message["Bcc"] is None
    assert b"\nBcc:" not in headers
    assert "\n" not in message["Subject"]
    assert "Acme Bcc: evil@example.com" in message["Subject"]


@pytest.fixture
def file_mailer(tmp_path: Path, make_settings) -> FileMailer:
    mailer = create_mailer(make_settings(mail_url=f"file://{tmp_path}/mail"))
    assert isinstance(mailer, FileMailer)
    return mailer


async def test_the_file_backend_writes_one_eml_per_message_and_logs_subject_and_recipient(
    file_mailer: FileMailer, caplog: pytest.LogCaptureFixture
) -> None:
    message = render_email("verify_email", "first@example.com", CONTEXTS["verify_email"])
    # caplog, not structlog's capture_logs: loggers cached by earlier tests bypass the latter.
    with caplog.at_level(logging.INFO, logger="tenantry.mail"):
        await file_mailer.send(message)
        await file_mailer.send(
            render_email("password_reset", "second@example.com", CONTEXTS["password_reset"])
        )
    files = sorted(file_mailer.directory.glob("*.eml"))
    assert len(files) == 2
    parsed = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert {p["To"] for p in parsed} == {"first@example.com", "second@example.com"}
    assert all(p["From"] == "tenantry <no-reply@example.com>" for p in parsed)
    assert all(p["Message-ID"].endswith("@example.com>") for p in parsed)
    assert parsed[0]["Message-ID"] != parsed[1]["Message-ID"]
    assert not list(file_mailer.directory.glob(".*.partial"))
    logs = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    written = [entry for entry in logs if entry["event"] == "mail written"]
    assert {entry["to"] for entry in written} == {"first@example.com", "second@example.com"}
    assert written[0]["subject"] == "Verify your email address for tenantry"


async def test_the_app_writes_mail_under_var_dir_by_default(build_app, tmp_path: Path) -> None:
    app = await build_app(var_dir=tmp_path)
    assert isinstance(services_of(app).mailer, FileMailer)
    assert services_of(app).mailer.directory == tmp_path / "mail"


# --- SMTP against a real server ----------------------------------------------------------


@dataclass
class Inbox:
    port: int
    received: list[Envelope] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
async def smtp_server() -> AsyncIterator[Inbox]:
    inbox = Inbox(port=0)

    def authenticate(
        server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        inbox.logins.append((data.login, data.password))
        return AuthResult(
            success=(data.login, data.password) == (b"mailer", b"p@ss word"), handled=False
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            inbox, authenticator=authenticate, auth_require_tls=False, hostname="localhost"
        ),
        host="127.0.0.1",
        port=0,
    )
    sock: socket.socket = server.sockets[0]
    inbox.port = sock.getsockname()[1]
    try:
        yield inbox
    finally:
        server.close()
        await server.wait_closed()


async def test_the_smtp_backend_delivers_to_a_real_server_with_the_url_credentials(
    smtp_server: Inbox, make_settings
) -> None:
    settings = make_settings(
        mail_url=f"smtp://mailer:p%40ss%20word@127.0.0.1:{smtp_server.port}?timeout=5",
        mail_from="accounts@example.com",
        mail_from_name="Acme Accounts",
    )
    mailer = create_mailer(settings)
    assert isinstance(mailer, SmtpMailer)
    await mailer.send(render_email("invitation", "invitee@example.com", CONTEXTS["invitation"]))

    assert smtp_server.logins == [(b"mailer", b"p@ss word")]
    [envelope] = smtp_server.received
    assert envelope.mail_from == "accounts@example.com"
    assert envelope.rcpt_tos == ["invitee@example.com"]
    assert isinstance(envelope.content, bytes)
    delivered = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert delivered["From"] == "Acme Accounts <accounts@example.com>"
    assert delivered["Subject"] == "Grace invited you to Acme on tenantry"
    assert isinstance(delivered, EmailMessage)
    text, html = parts(delivered)
    assert "https://app.example.com/invitations/abc" in text
    assert "https://app.example.com/invitations/abc" in html


async def test_a_rejected_login_is_a_delivery_error(smtp_server: Inbox, make_settings) -> None:
    mailer = create_mailer(
        make_settings(mail_url=f"smtp://mailer:wrong@127.0.0.1:{smtp_server.port}")
    )
    with pytest.raises(MailDeliveryError):
        await mailer.send(
            render_email("password_reset", "a@example.com", CONTEXTS["password_reset"])
        )
    assert smtp_server.received == []


async def test_an_unreachable_smtp_server_is_a_delivery_error(make_settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    mailer = create_mailer(make_settings(mail_url=f"smtp://127.0.0.1:{free_port}?timeout=2"))
    with pytest.raises(MailDeliveryError):
        await mailer.send(
            render_email("password_reset", "a@example.com", CONTEXTS["password_reset"])
        )


def test_smtp_urls_are_parsed_into_host_port_tls_and_credentials(make_settings) -> None:
    starttls = create_mailer(make_settings(mail_url="smtp://u:p@mail.example.com:2525?starttls=1"))
    assert isinstance(starttls, SmtpMailer)
    assert (starttls.hostname, starttls.port, starttls.start_tls, starttls.use_tls) == (
        "mail.example.com",
        2525,
        True,
        False,
    )
    assert (starttls.username, starttls.password) == ("u", "p")
    implicit = create_mailer(make_settings(mail_url="smtps://mail.example.com"))
    assert isinstance(implicit, SmtpMailer)
    assert (implicit.port, implicit.use_tls, implicit.username) == (465, True, None)


async def test_send_email_renders_and_hands_the_message_to_the_mailer(
    file_mailer: FileMailer,
) -> None:
    await send_email(
        file_mailer, to="helper@example.com", template="password_changed", context={"name": "Bo"}
    )
    [path] = list(file_mailer.directory.glob("*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "helper@example.com"
    assert message["Subject"] == "Your tenantry password was changed"


CONTROLS = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\u202e", "\u2066"]


@pytest.mark.parametrize("junk", CONTROLS)
def test_control_characters_never_reach_the_subject_or_a_display_name(junk: str) -> None:
    from tenantry.core.mail.render import make_address

    context = {**CONTEXTS["invitation"], "organization_name": f"Ac{junk}me"}
    message = render_email("invitation", "user@example.com", context)
    assert junk not in message["Subject"]
    assert "Acme" in message["Subject"] or "Ac me" in message["Subject"]
    sender = make_address("no-reply@example.com", f"Evil{junk}\r\nBcc: x@example.com")
    assert junk not in sender.display_name
    assert "\n" not in sender.display_name
