"""User request/response shapes. A user object never carries a hash, a secret or a token."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, ClassVar, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import AfterValidator, BeforeValidator, ConfigDict, EmailStr, Field
from pydantic.json_schema import SkipJsonSchema

from tenantry.core.responses import ListQuery, RequestSchema, Schema
from tenantry.modules.users.models import PlatformRole

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128


def normalize_email(value: str) -> str:
    return value.strip().lower()


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _case_insensitive(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# email-validator refuses the special-use domains (RFC 6761: `.test`, `.localhost`...):
# the document says so with a pattern, or generated clients would send what we refuse.
UNDELIVERABLE_DOMAINS_EXCLUDED = (
    "^(?![^@]*@(?:[^@]*\\.)?(?:"
    + "|".join(_case_insensitive(d) for d in SPECIAL_USE_DOMAIN_NAMES)
    + ")\\.?$)"
)

Email = Annotated[
    EmailStr,
    BeforeValidator(_strip),
    AfterValidator(normalize_email),
    Field(max_length=320, json_schema_extra={"pattern": UNDELIVERABLE_DOMAINS_EXCLUDED}),
]
# Any Unicode, never truncated or normalised: the bytes a user typed are the bytes we hash.
Password = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)]
# Verifying an existing password: no minimum (old accounts), same maximum.
PresentedPassword = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
Name = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=100)]


class UserOut(Schema):
    id: uuid.UUID
    email: str
    first_name: str | None
    last_name: str | None
    role: PlatformRole
    is_active: bool
    email_verified: bool
    mfa_enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class AdminUserOut(UserOut):
    deleted_at: dt.datetime | None = None
    last_login_at: dt.datetime | None = None


class UpdateMe(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"firstName": "Ada", "lastName": "Lovelace"}]}
    )

    first_name: Name | None = None
    last_name: Name | None = None


class DeleteMe(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"password": "correct horse battery staple"}]}
    )

    # Required for an account with a local password; an account that only ever signed in
    # through an external provider confirms with that provider's token instead.
    password: PresentedPassword | SkipJsonSchema[None] = Field(
        default=None,
        description="Required when the account has a password (400 without it)",
    )


class AdminCreateUser(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "correct horse battery staple",
                    "firstName": "Ada",
                    "role": "USER",
                }
            ]
        }
    )

    email: Email
    password: Password
    first_name: Name | None = None
    last_name: Name | None = None
    role: PlatformRole = PlatformRole.USER
    is_active: bool = True
    email_verified: bool = False


class AdminUpdateUser(RequestSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"isActive": False}]})

    first_name: Name | None = None
    last_name: Name | None = None
    role: PlatformRole | None = None
    is_active: bool | None = None


class UserListQuery(ListQuery):
    sort_fields: ClassVar[tuple[str, ...]] = ("createdAt", "updatedAt", "email", "lastName")

    role: PlatformRole | None = None
    is_active: bool | None = None
    deleted: Literal["exclude", "only"] = "exclude"


class SessionExport(Schema):
    id: uuid.UUID
    user_agent: str | None
    ip: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None


class MembershipExport(Schema):
    organization_id: uuid.UUID
    organization_name: str
    role: str
    joined_at: dt.datetime


class InvitationExport(Schema):
    id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    role: str
    status: str
    invited_by: uuid.UUID | None
    created_at: dt.datetime
    expires_at: dt.datetime
    accepted_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyExport(Schema):
    """Metadata only: never the key or its hash."""

    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    prefix: str
    permissions: list[str]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class FileExport(Schema):
    """Metadata only (the bytes are downloaded from the organization's files)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: dt.datetime
    deleted_at: dt.datetime | None


class AuditEntryExport(Schema):
    id: uuid.UUID
    organization_id: uuid.UUID
    action: str
    entity_type: str
    entity_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    changes: dict[str, Any]
    ip: str | None
    user_agent: str | None
    request_id: str | None
    created_at: dt.datetime


class UserExport(Schema):
    """Everything stored about the caller (GDPR access request)."""

    user: AdminUserOut
    sessions: list[SessionExport]
    mfa_recovery_codes_remaining: int
    memberships: list[MembershipExport]
    invitations_sent: list[InvitationExport]
    invitations_received: list[InvitationExport]
    api_keys: list[ApiKeyExport]
    files: list[FileExport]
    audit_entries: list[AuditEntryExport]
    exported_at: dt.datetime
