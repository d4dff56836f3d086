"""Providers' signed user-lifecycle webhooks: `POST /auth/providers/{name}/webhook`.

Signatures (the provider's `webhookScheme`, with its `webhookSecret`):
- `svix` — Clerk (and anything sending through Svix): `svix-id`, `svix-timestamp`,
  `svix-signature` headers, verified by the maintained `svix` library (HMAC-SHA256 over
  `id.timestamp.body`, constant-time comparison, timestamp within 5 minutes);
- `hmac` — a generic scheme: `Webhook-Id`, `Webhook-Timestamp` (Unix seconds) and
  `Webhook-Signature: sha256=<hex of HMAC-SHA256(secret, "{id}.{timestamp}.{raw body}")>`,
  the timestamp within `AUTH_WEBHOOK_TOLERANCE_SECONDS`.
Replays: a message id is remembered (the cache, for twice the tolerance) and a second
delivery of it is refused, as is anything outside the tolerance. Bad or replayed → 401.

Events (Clerk's shape; the generic scheme sends the same `{type, data}`):
`user.deleted` erases the linked account (the path of `DELETE /users/me`); `user.updated`
sets email and names. Others are acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from svix.webhooks import Webhook, WebhookVerificationError

from tenantry.config import AuthProvider
from tenantry.core.cache import Cache
from tenantry.core.db import utcnow
from tenantry.core.errors import Conflict, Unauthorized, ValidationFailed
from tenantry.core.security import sha256_hex
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.identity.models import Identity
from tenantry.modules.identity.tokens import claim, clean_name, is_true, normalized_email
from tenantry.modules.users import service as users
from tenantry.modules.users.models import User

SVIX_TOLERANCE_SECONDS = 5 * 60  # fixed by the svix library
BAD_SIGNATURE = "The webhook signature is invalid"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    message_id: str
    type: str
    data: dict[str, Any]
    replay_key: str  # the cache entry remembering the message id


async def receive_webhook(
    session: AsyncSession,
    cache: Cache,
    revocations: Revocations,
    provider: AuthProvider,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance_seconds: int,
) -> None:
    """Verify, then carry out, one delivery. A delivery whose event fails (409: the last
    owner of a shared organization; 400) is forgotten, so the provider's retry of the same
    message is not taken for a replay."""
    event = await verify_webhook(
        provider, headers, body, cache, tolerance_seconds=tolerance_seconds
    )
    try:
        await apply_event(session, cache, revocations, provider, event)
    except Exception:
        await cache.delete(event.replay_key)
        raise


async def verify_webhook(
    provider: AuthProvider,
    headers: dict[str, str],
    body: bytes,
    cache: Cache,
    *,
    tolerance_seconds: int,
) -> WebhookEvent:
    """The event of a correctly signed, fresh, first delivery (401 otherwise)."""
    secret = provider.webhook_secret.get_secret_value() if provider.webhook_secret else ""
    lowered = {k.lower(): v for k, v in headers.items()}
    if provider.webhook_scheme == "svix":
        message_id = lowered.get("svix-id", "")
        try:
            Webhook(secret).verify(body, lowered)
        except WebhookVerificationError:
            raise Unauthorized(BAD_SIGNATURE) from None
        remember = max(tolerance_seconds, SVIX_TOLERANCE_SECONDS)
    else:
        message_id = lowered.get("webhook-id", "")
        _verify_hmac(secret, lowered, message_id, body, tolerance_seconds)
        remember = tolerance_seconds
    if not message_id:
        raise Unauthorized(BAD_SIGNATURE)
    # Remembered past the tolerance window on both sides: a replay is either too old or seen.
    key = f"identity:webhook:{provider.name}:{sha256_hex(message_id)}"
    if not await cache.add(key, b"1", ttl=2 * remember):
        raise Unauthorized("This webhook message was already received")
    try:
        return _event(message_id, body, key)
    except ValidationFailed:
        await cache.delete(key)
        raise


def _verify_hmac(
    secret: str, headers: dict[str, str], message_id: str, body: bytes, tolerance: int
) -> None:
    timestamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    if not message_id or not timestamp.isdigit() or not signature.startswith("sha256="):
        raise Unauthorized(BAD_SIGNATURE)
    if abs(time.time() - int(timestamp)) > tolerance:
        raise Unauthorized(BAD_SIGNATURE)
    expected = hmac_signature(secret, message_id, timestamp, body)
    if not hmac.compare_digest(expected, signature.removeprefix("sha256=")):
        raise Unauthorized(BAD_SIGNATURE)


def hmac_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 the generic scheme's `Webhook-Signature` carries (after `sha256=`)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _event(message_id: str, body: bytes, replay_key: str) -> WebhookEvent:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationFailed("The webhook body is not JSON") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("type"), str)
        or not isinstance(payload.get("data"), dict)
    ):
        raise ValidationFailed("The webhook body needs `type` and a `data` object")
    return WebhookEvent(message_id, payload["type"], payload["data"], replay_key)


async def apply_event(
    session: AsyncSession,
    cache: Cache,
    revocations: Revocations,
    provider: AuthProvider,
    event: WebhookEvent,
) -> None:
    """Carry out `event` on the account linked to its subject (unknown subject: nothing)."""
    if event.type not in {"user.deleted", "user.updated"}:
        return
    subject = event.data.get("id", event.data.get("sub"))
    if not isinstance(subject, str) or not subject:
        raise ValidationFailed("The webhook event names no user (`data.id`)")
    user = await session.scalar(
        select(User)
        .join(Identity, Identity.user_id == User.id)
        .where(Identity.provider == provider.name, Identity.subject == subject)
    )
    if user is None or user.password_hash == users.ERASED_PASSWORD_HASH:
        return  # never signed in here, or already erased: nothing to do (idempotent)
    if event.type == "user.deleted":
        await users.erase_account(session, cache, revocations, user)
    else:
        await _update_profile(session, provider, user, event.data)


async def _update_profile(
    session: AsyncSession, provider: AuthProvider, user: User, data: dict[str, Any]
) -> None:
    email, verified = _event_email(provider, data)
    if email is not None and email != user.email:
        if await users.find_user_by_email(session, email, include_deleted=True) is not None:
            raise Conflict("Another account already has this email")
        user.email = email
        user.email_verified_at = None
    if email is not None and verified and user.email_verified_at is None:
        user.email_verified_at = utcnow()
    for field, keys in (
        ("first_name", ("first_name", provider.first_name_claim)),
        ("last_name", ("last_name", provider.last_name_claim)),
    ):
        for key in keys:
            if key and key in data:
                setattr(user, field, clean_name(data[key]))
                break
    await session.flush()


def _event_email(provider: AuthProvider, data: dict[str, Any]) -> tuple[str | None, bool]:
    """The user's (primary) email and whether the provider verified it."""
    addresses = data.get("email_addresses")
    if isinstance(addresses, list):  # Clerk: a list, one of them primary
        primary = data.get("primary_email_address_id")
        for entry in addresses:
            if isinstance(entry, dict) and entry.get("id") == primary:
                status = (entry.get("verification") or {}).get("status")
                return normalized_email(entry.get("email_address")), status == "verified"
        return None, False
    verified = provider.email_verified_claim or "email_verified"
    return normalized_email(claim(data, provider.email_claim)), is_true(claim(data, verified))
