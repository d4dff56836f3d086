"""Verification of an external issuer's JWT (API.md, "External identity providers").

A Bearer token whose `iss` is a configured issuer is checked against that issuer's keys
only: the header's `alg` must be one of the provider's asymmetric algorithms (never
`none`, never HMAC — so a token "signed" with the public key as an HMAC secret is refused
before any key is looked at), the `kid` is required and must be a key of *this* issuer's
JWKS of the same key type, and `exp`, `iat`, `iss`, `aud`, `sub` are required (`nbf` checked
when present) with `AUTH_CLOCK_LEEWAY_SECONDS` of leeway (at most 60 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from tenantry.config import AuthProvider
from tenantry.core.security import InvalidAccessToken
from tenantry.modules.identity.keys import IssuerKeys

NAME_MAX = 100
EMAIL_MAX = 320


@dataclass(frozen=True, slots=True)
class ExternalClaims:
    provider: str
    subject: str
    email: str | None
    email_verified: bool
    first_name: str | None
    last_name: str | None
    issued_at: float
    expires_at: float
    token_id: str


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, read without verification (only to pick the verifier)."""
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = payload.get("iss")
    return issuer if isinstance(issuer, str) else None


async def verify_external_token(
    provider: AuthProvider, keys: IssuerKeys, token: str, *, leeway: float
) -> ExternalClaims:
    """The claims of `token` from `provider`, or `InvalidAccessToken` (expired flagged)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidAccessToken from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in provider.algorithms or not isinstance(kid, str):
        raise InvalidAccessToken
    key = await keys.key(kid)
    if key is None or not key.verifies(alg):
        raise InvalidAccessToken
    try:
        claims = jwt.decode(
            token,
            key.jwk.key,
            algorithms=[alg],
            issuer=provider.issuer,
            audience=provider.audience,
            leeway=leeway,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidAccessToken(expired=True) from None
    except jwt.PyJWTError:
        raise InvalidAccessToken from None
    return _claims_of(provider, claims)


def _claims_of(provider: AuthProvider, claims: dict[str, Any]) -> ExternalClaims:
    subject = claims["sub"]
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        raise InvalidAccessToken
    return ExternalClaims(
        provider=provider.name,
        subject=subject,
        email=normalized_email(claim(claims, provider.email_claim)),
        email_verified=is_true(claim(claims, provider.email_verified_claim)),
        first_name=clean_name(claim(claims, provider.first_name_claim)),
        last_name=clean_name(claim(claims, provider.last_name_claim)),
        issued_at=float(claims["iat"]),
        expires_at=float(claims["exp"]),
        token_id=str(claims.get("jti", "")),
    )


def claim(claims: dict[str, Any], name: str | None) -> Any:
    """The claim `name`: a top-level key (Auth0's `https://...` names included), else a
    dotted path into nested objects (Supabase's `user_metadata.email_verified`)."""
    if not name:
        return None
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def normalized_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > EMAIL_MAX or "\x00" in email:
        return None
    return email


def is_true(value: Any) -> bool:
    # Some issuers (Cognito, older Keycloak mappers) send the boolean as a string.
    return value is True or value == "true"


def clean_name(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        return None
    return value.strip()[:NAME_MAX]
