"""Auth request/response shapes (API.md, section Auth)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from tenantry.core.responses import RequestSchema, Schema
from tenantry.modules.users.schemas import Email, Name, Password, PresentedPassword, UserOut

OpaqueToken = Annotated[str, Field(min_length=1, max_length=512)]
# A 6-digit TOTP code, or a recovery code (xxxxx-xxxxx).
MfaCode = Annotated[str, Field(min_length=6, max_length=32)]


class RegisterRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "correct horse battery staple",
                    "firstName": "Ada",
                    "lastName": "Lovelace",
                }
            ]
        }
    )

    email: Email
    password: Password
    first_name: Name | None = None
    last_name: Name | None = None


class LoginRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ada@example.com", "password": "correct horse battery staple"}]
        }
    )

    email: Email
    password: PresentedPassword
    mfa_code: MfaCode | None = None


class RefreshRequest(RequestSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"refreshToken": "rt_2b7f0c9e4d…"}]})

    refresh_token: OpaqueToken


class ForgotPasswordRequest(RequestSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "ada@example.com"}]})

    email: Email


class ResetPasswordRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"token": "the token from the emailed link", "password": "a new long passphrase"}
            ]
        }
    )

    token: OpaqueToken
    password: Password


class ChangePasswordRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "currentPassword": "correct horse battery staple",
                    "newPassword": "a new long passphrase",
                }
            ]
        }
    )

    current_password: PresentedPassword
    new_password: Password


class VerifyEmailRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "the token from the emailed link"}]}
    )

    token: OpaqueToken


class MfaEnableRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"password": "correct horse battery staple", "code": "123456"}]
        }
    )

    # The current password: an access token alone cannot turn MFA on.
    password: PresentedPassword
    code: MfaCode


class MfaDisableRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"password": "correct horse battery staple", "code": "123456"}]
        }
    )

    password: PresentedPassword
    code: MfaCode


class AuthResult(Schema):
    user: UserOut
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class SessionOut(Schema):
    id: uuid.UUID
    user_agent: str | None
    ip: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime
    current: bool


class MfaSetupOut(Schema):
    secret: str
    otpauth_uri: str


class RecoveryCodesOut(Schema):
    recovery_codes: list[str]


class EmailVerifiedOut(Schema):
    email_verified: bool
