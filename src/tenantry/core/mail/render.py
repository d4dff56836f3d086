"""Render a named template (subject, plain text, HTML) into an `email.message.EmailMessage`.

Header injection is impossible by construction: addresses go through `email_validator`
(no CR/LF, no second address), headers are set on `EmailMessage` (which refuses line
breaks) from `Address` objects, and the rendered subject (and any display name) is
collapsed to one line with every control character removed — whatever a tenant put in
an organization or user name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from tenantry.core.errors import ValidationFailed

TEMPLATES = frozenset(
    {
        "verify_email",
        "password_reset",
        "invitation",
        "password_changed",
        "security_notice",
        "trial_ending",
        "trial_expired",
    }
)
_WHITESPACE = re.compile(r"\s+")
# What is left after whitespace is collapsed: C0/C1 controls (NUL, ESC, ...), DEL, and the
# bidi overrides that would make a subject read differently from what it says.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

_environment = Environment(
    loader=PackageLoader("tenantry.core.mail", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


class InvalidAddress(ValidationFailed):
    code = "invalid_email"
    message = "The email address is not valid"


def validate_address(address: str) -> str:
    """The normalised address, or `InvalidAddress` (a 400) for anything that is not one."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidAddress(details=[{"field": "email", "message": str(exc)}]) from None


def make_address(address: str, display_name: str = "") -> Address:
    local, _, domain = validate_address(address).rpartition("@")
    return Address(display_name=_one_line(display_name), username=local, domain=domain)


def _one_line(text: str) -> str:
    """One printable line: line breaks (CR, LF, U+2028, ...) become spaces, controls go."""
    return _CONTROL.sub("", _WHITESPACE.sub(" ", text)).strip()


def render_email(
    template: str,
    to: str,
    context: Mapping[str, Any],
    *,
    sender: Address | None = None,
) -> EmailMessage:
    """Build the message for `template` to `to`; `From` is filled by the mailer when None."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown email template {template!r}")
    values = {"product_name": "tenantry", **context}
    recipient = make_address(to)
    message = EmailMessage()
    message["Subject"] = _one_line(
        _environment.get_template(f"{template}.subject.txt").render(values)
    )
    message["To"] = recipient
    if sender is not None:
        message["From"] = sender
    message["Date"] = format_datetime(datetime.now(UTC))
    message.set_content(_environment.get_template(f"{template}.txt").render(values))
    message.add_alternative(
        _environment.get_template(f"{template}.html").render(values), subtype="html"
    )
    return message
