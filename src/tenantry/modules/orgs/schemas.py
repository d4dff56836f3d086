"""Request and response bodies of the organizations API (API.md, Organizations)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from tenantry.core.permissions import Role
from tenantry.core.responses import ListQuery, RequestSchema, Schema
from tenantry.modules.orgs.slugs import SLUG_PATTERN
from tenantry.modules.users.schemas import Email

# C0/C1 controls (CR/LF among them), DEL, Unicode line/paragraph separators and bidi
# overrides: an organization name is shown in email subjects and other people's UIs.
_UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _printable_name(value: str) -> str:
    if _UNSAFE_IN_NAME.search(value):
        raise ValueError("must not contain line breaks or control characters")
    return value


OrganizationName = Annotated[
    str,
    # The document states what `_printable_name` refuses.
    Field(
        min_length=1,
        max_length=100,
        json_schema_extra={
            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069]*$"
        },
    ),
    AfterValidator(_printable_name),
]


class CreateOrganization(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Acme Inc", "slug": "acme"}]}
    )

    name: OrganizationName
    slug: str | None = Field(default=None, pattern=SLUG_PATTERN)


class UpdateOrganization(RequestSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Corporation"}]})

    name: OrganizationName | None = None
    slug: str | None = Field(default=None, pattern=SLUG_PATTERN)


class OrganizationOut(Schema):
    id: uuid.UUID
    name: str
    slug: str
    plan: str
    subscription_status: str
    trial_ends_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class MyOrganizationOut(OrganizationOut):
    my_role: str


class OrganizationListQuery(ListQuery):
    sort_fields = ("createdAt", "name")


class MemberOut(Schema):
    user_id: uuid.UUID
    email: str
    first_name: str | None
    last_name: str | None
    role: str
    joined_at: dt.datetime


class MemberListQuery(ListQuery):
    sort_fields = ("createdAt", "joinedAt", "email")


class ChangeRole(RequestSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "manager"}]})

    role: Role


class TransferOwnership(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"userId": "0193f5a2-8c1e-7d3a-9b2f-4e5d6c7b8a90"}]}
    )

    user_id: uuid.UUID


class CreateInvitation(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "grace@example.com", "role": "member"}]}
    )

    email: Email
    role: Role


class InvitationOut(Schema):
    id: uuid.UUID
    email: str
    role: str
    status: str
    expires_at: dt.datetime
    invited_by: uuid.UUID | None
    created_at: dt.datetime


class AcceptInvitation(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "the token from the emailed link"}]}
    )

    token: str = Field(min_length=1, max_length=200)


class RoleOut(Schema):
    role: str
    permissions: list[str]
