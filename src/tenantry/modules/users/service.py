"""Users: creation, lookup, self-service profile, platform administration, GDPR."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache
from tenantry.core.db import utcnow
from tenantry.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tenantry.core.listing import Listing, SortKey, created_at_key, list_rows, updated_at_key
from tenantry.core.responses import ListQuery
from tenantry.core.security import Security
from tenantry.modules.auth.credentials import verify_password_or_fail
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.auth.sessions import end_all_sessions, erase_credentials
from tenantry.modules.orgs.departure import depart, plan_departure, revoke_keys_everywhere
from tenantry.modules.users.models import PlatformRole, User
from tenantry.modules.users.schemas import AdminCreateUser, AdminUpdateUser, UpdateMe

ERASED_PASSWORD_HASH = "!erased"  # matches no hasher: nothing can ever log in
# An account created for an external identity provider's user has no local password
# (matches no hasher) until one is set through the password-reset flow.
EXTERNAL_PASSWORD_HASH = "!external"


async def find_user_by_email(
    session: AsyncSession, email: str, *, include_deleted: bool = False
) -> User | None:
    query = select(User).where(User.email == email)
    if not include_deleted:
        query = query.where(User.deleted_at.is_(None))
    return await session.scalar(query)


async def create_user(
    session: AsyncSession,
    security: Security,
    *,
    email: str,
    password: str,
    first_name: str | None = None,
    last_name: str | None = None,
    role: PlatformRole = PlatformRole.USER,
    is_active: bool = True,
    email_verified: bool = False,
) -> User:
    # Hash before the first query: on SQLite that query opens the write transaction.
    password_hash = await security.passwords.hash(password)
    if await find_user_by_email(session, email, include_deleted=True) is not None:
        raise Conflict("An account with this email already exists")
    user = User(
        email=email,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        role=role.value,
        is_active=is_active,
        email_verified_at=utcnow() if email_verified else None,
    )
    session.add(user)
    await session.flush()  # a concurrent registration of the same email → 409 here
    return user


async def create_external_user(
    session: AsyncSession,
    *,
    email: str,
    first_name: str | None,
    last_name: str | None,
    email_verified: bool,
) -> User:
    """An account for an external identity's first token (no local password)."""
    user = User(
        email=email,
        password_hash=EXTERNAL_PASSWORD_HASH,
        first_name=first_name,
        last_name=last_name,
        email_verified_at=utcnow() if email_verified else None,
    )
    session.add(user)
    await session.flush()  # the same email registered meanwhile → 409 here
    return user


async def update_profile(session: AsyncSession, user: User, body: UpdateMe) -> User:
    for field in body.model_fields_set:
        setattr(user, field, getattr(body, field))
    await session.flush()
    return user


PASSWORD_TO_ERASE = "Required to delete an account that has a password"


async def confirm_erasure(
    security: Security, user: User, *, password: str | None, by_provider: bool
) -> None:
    """The caller proves it is the account holder: its password, or — for an account with
    no local password, called with its provider's token — that token."""
    if by_provider and user.password_hash == EXTERNAL_PASSWORD_HASH:
        return
    if password is None:
        raise ValidationFailed(details=[{"field": "password", "message": PASSWORD_TO_ERASE}])
    await verify_password_or_fail(security, user, password)


async def erase_account(
    session: AsyncSession, cache: Cache, revocations: Revocations, user: User
) -> None:
    """GDPR erasure: the row stays (foreign keys), everything personal goes.

    The memberships go too (the last owner of an organization with other members gets
    409 before anything changes; an organization the user was alone in is deleted), with
    the API keys the user created, the sessions and every access token.
    """
    plan = await plan_departure(session, user.id)
    await depart(session, cache, user.id, plan)
    await erase_credentials(session, revocations, user)
    user.email = f"erased-{user.id.hex}@erased.invalid"
    user.first_name = None
    user.last_name = None
    user.password_hash = ERASED_PASSWORD_HASH
    user.is_active = False
    user.email_verified_at = None
    user.last_login_at = None
    user.mfa_enabled = False
    user.mfa_secret_encrypted = None
    user.mfa_last_step = None
    user.deleted_at = utcnow()
    await session.flush()


# --- platform administration -------------------------------------------------------------

SORT_KEYS = (
    created_at_key(User.created_at),
    updated_at_key(User.updated_at),
    SortKey("email", User.email),
    SortKey("lastName", User.last_name),
)


def user_filters(
    *, search: str | None, role: PlatformRole | None, is_active: bool | None, deleted_only: bool
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = [
        User.deleted_at.is_not(None) if deleted_only else User.deleted_at.is_(None)
    ]
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        filters.append(
            or_(
                User.email.like(pattern, escape="\\"),
                func.lower(User.first_name).like(pattern, escape="\\"),
                func.lower(User.last_name).like(pattern, escape="\\"),
            )
        )
    if role is not None:
        filters.append(User.role == role.value)
    if is_active is not None:
        filters.append(User.is_active.is_(is_active))
    return filters


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_users(
    session: AsyncSession, filters: Sequence[ColumnElement[bool]], query: ListQuery
) -> Listing[User]:
    """Offset pages on any sort key, keyset pages (a `cursor`) on `(createdAt, id)`."""
    return await list_rows(
        session, select(User).where(*filters), keys=SORT_KEYS, id_column=User.id, query=query
    )


async def get_user(session: AsyncSession, user_id: uuid.UUID, *, deleted: bool = False) -> User:
    user = await session.get(User, user_id)
    if user is None or (user.deleted_at is not None) != deleted:
        raise NotFound("User not found")
    return user


def _check_role_authority(
    actor: User, target_role: PlatformRole | None, target: User | None
) -> None:
    """Only a SUPER_ADMIN grants an admin role or touches an admin account."""
    if actor.platform_role is PlatformRole.SUPER_ADMIN:
        return
    if target_role is not None and target_role is not PlatformRole.USER:
        raise Forbidden("Only a super admin can grant admin roles")
    if target is not None and target.platform_role is not PlatformRole.USER:
        raise Forbidden("Only a super admin can change an admin account")


async def admin_create_user(
    session: AsyncSession, security: Security, actor: User, body: AdminCreateUser
) -> User:
    _check_role_authority(actor, body.role, None)
    return await create_user(
        session,
        security,
        email=body.email,
        password=body.password,
        first_name=body.first_name,
        last_name=body.last_name,
        role=body.role,
        is_active=body.is_active,
        email_verified=body.email_verified,
    )


async def admin_update_user(
    session: AsyncSession,
    revocations: Revocations,
    actor: User,
    target: User,
    body: AdminUpdateUser,
) -> User:
    changes = body.model_dump(exclude_unset=True)
    _check_role_authority(actor, body.role if "role" in changes else None, target)
    if target.id == actor.id and ({"role", "is_active"} & changes.keys()):
        raise Forbidden("You cannot change your own role or deactivate yourself")
    for field, value in changes.items():
        if value is None and field in {"role", "is_active"}:
            continue
        setattr(target, field, value.value if isinstance(value, PlatformRole) else value)
    if changes.get("is_active") is False:
        await end_all_sessions(session, revocations, target, reason="deactivated")
        await revoke_keys_everywhere(
            session, target.id, actor_id=actor.id, reason="creator_deactivated"
        )
    await session.flush()
    return target


async def admin_delete_user(
    session: AsyncSession, revocations: Revocations, actor: User, target: User
) -> None:
    _check_role_authority(actor, None, target)
    if target.id == actor.id:
        raise Forbidden("Use DELETE /users/me to delete your own account")
    target.deleted_at = utcnow()
    await end_all_sessions(session, revocations, target, reason="deleted")
    await revoke_keys_everywhere(session, target.id, actor_id=actor.id, reason="creator_deleted")


async def admin_restore_user(session: AsyncSession, actor: User, target: User) -> User:
    _check_role_authority(actor, None, target)
    if target.password_hash == ERASED_PASSWORD_HASH:
        raise Conflict("An erased account cannot be restored")
    target.deleted_at = None
    await session.flush()
    return target
