"""What `tenantry createsuperuser` and `tenantry seed` do (the CLI only parses and prints)."""

from __future__ import annotations

import os

from pydantic import TypeAdapter, ValidationError

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.security import Security
from tenantry.modules.users.models import PlatformRole
from tenantry.modules.users.schemas import Email, Password
from tenantry.modules.users.service import create_user, find_user_by_email

SEED_ADMIN_EMAIL = "admin@example.com"
SEED_DEMO_EMAIL = "demo@example.com"
# Development seeds only; overridable, and printed so the developer can sign in.
SEED_ADMIN_PASSWORD_ENV = "TENANTRY_SEED_ADMIN_PASSWORD"
SEED_DEMO_PASSWORD_ENV = "TENANTRY_SEED_DEMO_PASSWORD"


def validate_new_account(email: str, password: str) -> tuple[str, str]:
    """The normalised email and the password, or ValueError naming what is wrong."""
    try:
        normalised = TypeAdapter(Email).validate_python(email)
    except ValidationError:
        raise ValueError(f"{email!r} is not a valid email address") from None
    try:
        TypeAdapter(Password).validate_python(password)
    except ValidationError:
        raise ValueError("the password must be 8 to 128 characters long") from None
    return normalised, password


async def ensure_super_admin(settings: Settings, email: str, password: str) -> bool:
    """Create the account as SUPER_ADMIN, or promote and re-password it; True when created."""
    database = Database(settings)
    security = Security.from_settings(settings)
    try:
        async with database.transaction() as session:
            user = await find_user_by_email(session, email)
            if user is None:
                await create_user(
                    session,
                    security,
                    email=email,
                    password=password,
                    role=PlatformRole.SUPER_ADMIN,
                    email_verified=True,
                )
                return True
            user.role = PlatformRole.SUPER_ADMIN.value
            user.is_active = True
            user.password_hash = await security.passwords.hash(password)
            user.email_verified_at = user.email_verified_at or utcnow()
            return False
    finally:
        await database.dispose()


async def seed_accounts(settings: Settings) -> list[str]:
    """A super admin and a demo user; existing accounts are left untouched."""
    if settings.is_production:
        raise SystemExit("tenantry: refusing to seed demo accounts with ENV=production")
    seeds = [
        (
            SEED_ADMIN_EMAIL,
            os.environ.get(SEED_ADMIN_PASSWORD_ENV, "admin-password"),
            PlatformRole.SUPER_ADMIN,
        ),
        (
            SEED_DEMO_EMAIL,
            os.environ.get(SEED_DEMO_PASSWORD_ENV, "demo-password"),
            PlatformRole.USER,
        ),
    ]
    database = Database(settings)
    security = Security.from_settings(settings)
    report = []
    try:
        async with database.transaction() as session:
            for email, password, role in seeds:
                if await find_user_by_email(session, email, include_deleted=True) is not None:
                    report.append(f"{email} already exists (unchanged)")
                    continue
                await create_user(
                    session,
                    security,
                    email=email,
                    password=password,
                    role=role,
                    email_verified=True,
                )
                report.append(f"created {role.value} {email} with password {password}")
    finally:
        await database.dispose()
    return report
