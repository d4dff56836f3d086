"""The contexts identity flows give their emails render with the mail templates."""

from __future__ import annotations

from collections.abc import Callable

from tenantry.config import Settings
from tenantry.core.mail import render_email
from tenantry.modules.auth.emails import duration_text, token_link


def test_reset_and_verification_contexts_render_with_the_link(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(app_url="https://app.example.com/")
    for template, path in (
        ("password_reset", "/reset-password"),
        ("verify_email", "/verify-email"),
    ):
        link = token_link(settings, path, "tok/en+1")
        assert link == f"https://app.example.com{path}?token=tok%2Fen%2B1"
        message = render_email(
            template, "ada@example.com", {"name": "Ada", "link": link, "expires_in": "1 hour"}
        )
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert link in text
        assert "1 hour" in text


def test_durations_read_naturally() -> None:
    assert duration_text(3600) == "1 hour"
    assert duration_text(48 * 3600) == "48 hours"
    assert duration_text(90 * 60) == "90 minutes"


def test_the_security_notice_context_renders() -> None:
    message = render_email(
        "security_notice",
        "ada@example.com",
        {"name": "Ada", "event": "a refresh token was reused", "device": "Phone/1.0"},
    )
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "a refresh token was reused" in text
    assert "Phone/1.0" in text
