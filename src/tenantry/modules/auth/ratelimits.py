"""Rate limits of the auth endpoints (limits from settings; see API.md, section Auth).

login: `RATE_LIMIT_LOGIN` per IP+email and `RATE_LIMIT_LOGIN_IP` per IP; register,
forgot, resend and every MFA verification: `RATE_LIMIT_AUTH` per IP. 429 with
`Retry-After` past the limit, 503 when the limiter's store is down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from tenantry.config import Settings
from tenantry.core.ratelimit import client_ip, get_rate_limiter


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def limit_per_ip(action: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency: `RATE_LIMIT_AUTH` per client IP for `action`."""

    async def dependency(request: Request) -> None:
        limit = _settings(request).rate_limit_auth
        await get_rate_limiter(request).hit(f"auth.{action}|{client_ip(request)}", limit)

    return dependency


async def limit_login_per_ip(request: Request) -> None:
    limit = _settings(request).rate_limit_login_ip
    await get_rate_limiter(request).hit(f"auth.login|{client_ip(request)}", limit)


def _login_key(request: Request, email: str) -> str:
    return f"auth.login|{client_ip(request)}|{email}"


async def hit_login_per_email(request: Request, email: str) -> None:
    await get_rate_limiter(request).hit(
        _login_key(request, email), _settings(request).rate_limit_login
    )


async def forget_login_failures(request: Request, email: str) -> None:
    """A successful login clears its IP+email counter (a user retrying a typo is not punished)."""
    limiter = get_rate_limiter(request)
    if not limiter.enabled:
        return
    await limiter.reset(_login_key(request, email), _settings(request).rate_limit_login)


async def hit_mfa_verification(request: Request) -> None:
    limit = _settings(request).rate_limit_auth
    await get_rate_limiter(request).hit(f"auth.mfa|{client_ip(request)}", limit)
