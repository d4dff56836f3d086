"""Checking a password the caller presents (login, change, MFA disable, account erasure)."""

from __future__ import annotations

from tenantry.core.errors import Unauthorized
from tenantry.core.security import Security
from tenantry.modules.users.models import User


def invalid_credentials() -> Unauthorized:
    return Unauthorized("Invalid email or password", code="invalid_credentials")


async def verify_password_or_fail(security: Security, user: User, password: str) -> None:
    matches, new_hash = await security.passwords.verify(password, user.password_hash)
    if not matches:
        raise invalid_credentials()
    if new_hash is not None:
        user.password_hash = new_hash
