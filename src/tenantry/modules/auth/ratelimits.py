"""Rate limits of the auth endpoints (limits from settings; see API.md, section Auth).

login: `RATE_LIMIT_LOGIN` per IP+email, `RATE_LIMIT_LOGIN_IP` per IP, and per account
(the submitted email, from any IP) an exponential delay after `LOGIN_BACKOFF_FREE_ATTEMPTS`
(`LOGIN_BACKOFF_*`); register, forgot, resend and every MFA verification:
`RATE_LIMIT_AUTH` per IP. 429 with `Retry-After` past the limit, 503 when the limiter's
store is down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from tenantry.config import Settings
from tenantry.core.openapi import declare
from tenantry.core.ratelimit import Backoff, client_ip, get_rate_limiter
from tenantry.services import services_of


def _settings(request: Request) -> Settings:
    return services_of(request).settings


def limit_per_ip(action: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency: `RATE_LIMIT_AUTH` per client IP for `action`."""

    async def dependency(request: Request) -> None:
        limit = _settings(request).rate_limit_auth
        await get_rate_limiter(request).hit(f"auth.{action}|{client_ip(request)}", limit)

    return declare(dependency, errors={429: ["rate_limited"]})


async def limit_login_per_ip(request: Request) -> None:
    limit = _settings(request).rate_limit_login_ip
    await get_rate_limiter(request).hit(f"auth.login|{client_ip(request)}", limit)


declare(limit_login_per_ip, errors={429: ["rate_limited"]})


def _login_key(request: Request, email: str) -> str:
    return f"auth.login|{client_ip(request)}|{email}"


async def hit_login_per_email(request: Request, email: str) -> None:
    await get_rate_limiter(request).hit(
        _login_key(request, email), _settings(request).rate_limit_login
    )


def _account_key(email: str) -> str:
    # The submitted email, whether or not an account has it: unknown addresses are delayed
    # exactly like known ones, so the delay tells nothing about which accounts exist.
    return f"auth.login-account|{email}"


def _login_backoff(settings: Settings) -> Backoff:
    return Backoff(
        free_attempts=settings.login_backoff_free_attempts,
        base_seconds=settings.login_backoff_base_seconds,
        max_seconds=settings.login_backoff_max_seconds,
        window_seconds=settings.login_backoff_window_seconds,
    )


async def hit_login_per_account(request: Request, email: str) -> None:
    """Per account, from any IP: past the free attempts, one attempt per doubling delay."""
    await get_rate_limiter(request).attempt(_account_key(email), _login_backoff(_settings(request)))


async def forget_login_failures(request: Request, email: str) -> None:
    """A successful login clears its IP+email counter and the account's back-off series."""
    limiter = get_rate_limiter(request)
    if not limiter.enabled:
        return
    await limiter.reset(_login_key(request, email), _settings(request).rate_limit_login)
    await limiter.forget_attempts(_account_key(email))


async def hit_mfa_verification(request: Request) -> None:
    limit = _settings(request).rate_limit_auth
    await get_rate_limiter(request).hit(f"auth.mfa|{client_ip(request)}", limit)


declare(hit_mfa_verification, errors={429: ["rate_limited"]})
