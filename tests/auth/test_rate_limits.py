"""Rate limits of the auth endpoints (each test builds its own app with limits on)."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import httpx

from tenantry.core.ratelimit import Backoff
from tests.conftest import RUN_ID, client_for
from tests.factories import register, unique_email

LOGIN = "/api/v1/auth/login"
WRONG = "definitely wrong password"


async def isolated(build_app, **overrides):
    """An app whose counters no other test shares (a key prefix of its own in Redis)."""
    prefix = f"tenantry-test-{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    return await build_app(redis_key_prefix=prefix, **overrides)


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_login_is_limited_per_ip_and_email(build_app) -> None:
    app = await isolated(build_app, rate_limit_login="5/minute")
    async with client_for(app) as client:
        account = await register(client)
        for _ in range(5):
            response = await client.post(LOGIN, json={"email": account.email, "password": WRONG})
            assert response.status_code == 401
        _assert_rate_limited(
            await client.post(LOGIN, json={"email": account.email, "password": account.password})
        )
        other = await client.post(LOGIN, json={"email": unique_email(), "password": WRONG})
        assert other.status_code == 401


async def test_a_successful_login_clears_the_ip_and_email_counter(build_app) -> None:
    app = await isolated(build_app, rate_limit_login="3/minute")
    async with client_for(app) as client:
        account = await register(client)
        for _ in range(2):
            await client.post(LOGIN, json={"email": account.email, "password": WRONG})
        body = {"email": account.email, "password": account.password}
        assert (await client.post(LOGIN, json=body)).status_code == 200
        for _ in range(2):
            await client.post(LOGIN, json={"email": account.email, "password": WRONG})
        assert (await client.post(LOGIN, json=body)).status_code == 200


async def test_login_is_limited_per_ip_across_emails(build_app) -> None:
    app = await isolated(build_app, rate_limit_login_ip="3/minute")
    async with client_for(app) as client:
        for _ in range(3):
            response = await client.post(LOGIN, json={"email": unique_email(), "password": WRONG})
            assert response.status_code == 401
        _assert_rate_limited(
            await client.post(LOGIN, json={"email": unique_email(), "password": WRONG})
        )


async def test_register_forgot_and_resend_are_limited_per_ip(build_app) -> None:
    app = await isolated(build_app, rate_limit_auth="2/minute")
    async with client_for(app) as client:
        first = await register(client)
        await register(client)
        _assert_rate_limited(
            await client.post(
                "/api/v1/auth/register",
                json={"email": unique_email(), "password": "long enough password"},
            )
        )
        for _ in range(2):
            ok = await client.post("/api/v1/auth/password/forgot", json={"email": unique_email()})
            assert ok.status_code == 202
        _assert_rate_limited(
            await client.post("/api/v1/auth/password/forgot", json={"email": unique_email()})
        )
        for _ in range(2):
            await client.post("/api/v1/auth/email/resend", headers=first.headers)
        _assert_rate_limited(await client.post("/api/v1/auth/email/resend", headers=first.headers))


async def test_mfa_verification_is_limited_per_ip(build_app) -> None:
    app = await isolated(build_app, rate_limit_auth="2/minute")
    async with client_for(app) as client:
        account = await register(client)
        await client.post("/api/v1/auth/mfa/setup", headers=account.headers)
        for _ in range(2):
            response = await client.post(
                "/api/v1/auth/mfa/enable",
                json={"password": account.password, "code": "000000"},
                headers=account.headers,
            )
            assert response.status_code in (200, 401)
        _assert_rate_limited(
            await client.post(
                "/api/v1/auth/mfa/enable",
                json={"password": account.password, "code": "000000"},
                headers=account.headers,
            )
        )


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(build_app) -> None:
    app = await isolated(build_app, rate_limit_login_ip="2/minute")
    async with client_for(app) as client:
        for i in range(2):
            await client.post(
                LOGIN,
                json={"email": unique_email(), "password": WRONG},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            )
        _assert_rate_limited(
            await client.post(
                LOGIN,
                json={"email": unique_email(), "password": WRONG},
                headers={"X-Forwarded-For": "203.0.113.99"},
            )
        )


async def test_behind_a_trusted_proxy_each_client_ip_has_its_own_counter(build_app) -> None:
    app = await isolated(build_app, rate_limit_login_ip="2/minute", trusted_proxies="127.0.0.1")
    async with client_for(app) as client:
        for i in range(4):
            response = await client.post(
                LOGIN,
                json={"email": unique_email(), "password": WRONG},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            )
            assert response.status_code == 401


async def test_auth_answers_503_not_500_nor_unlimited_when_redis_is_down(build_app) -> None:
    app = await isolated(build_app, redis_url="redis://127.0.0.1:1/0")
    async with client_for(app) as client:
        response = await client.post(LOGIN, json={"email": unique_email(), "password": WRONG})
        assert response.status_code == 503
        assert response.json()["code"] == "service_unavailable"
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": unique_email(), "password": "long enough password"},
        )
        assert response.status_code == 503


async def test_rate_limit_enabled_false_turns_the_auth_limits_off(build_app) -> None:
    app = await isolated(build_app, rate_limit_enabled=False, rate_limit_login="2/minute")
    async with client_for(app) as client:
        email = unique_email()
        for _ in range(5):
            response = await client.post(LOGIN, json={"email": email, "password": WRONG})
            assert response.status_code == 401


def _from_many_ips(client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    """A login poster whose every request comes from a new client IP (behind our proxy)."""
    addresses = (f"198.51.{n // 250}.{n % 250 + 1}" for n in itertools.count())

    async def post(email: str, password: str) -> httpx.Response:
        headers = {"X-Forwarded-For": next(addresses)}
        return await client.post(
            LOGIN, json={"email": email, "password": password}, headers=headers
        )

    return post


async def test_failed_logins_from_many_ips_delay_the_account_exponentially(build_app) -> None:
    app = await isolated(
        build_app,
        trusted_proxies="127.0.0.1",
        login_backoff_free_attempts=2,
        login_backoff_base_seconds=1,
    )
    async with client_for(app) as client:
        account = await register(client)
        login_from_new_ip = _from_many_ips(client)
        for _ in range(2):  # the free attempts
            assert (await login_from_new_ip(account.email, WRONG)).status_code == 401
        retry_afters = []
        for delay in (1, 2, 4):
            # This attempt opens the next delay; while it runs even the right password waits.
            assert (await login_from_new_ip(account.email, WRONG)).status_code == 401
            held = await login_from_new_ip(account.email, account.password)
            assert held.status_code == 429, held.text
            assert held.json()["code"] == "rate_limited"
            retry_afters.append(int(held.headers["retry-after"]))
            await asyncio.sleep(delay + 0.1)
        assert retry_afters == [1, 2, 4]

        # Not a lock: once the delay ran out the owner gets in, and the series starts over.
        assert (await login_from_new_ip(account.email, account.password)).status_code == 200
        for _ in range(2):
            assert (await login_from_new_ip(account.email, WRONG)).status_code == 401


async def test_unknown_emails_are_delayed_exactly_like_accounts(build_app) -> None:
    app = await isolated(build_app, trusted_proxies="127.0.0.1", login_backoff_free_attempts=2)
    async with client_for(app) as client:
        account = await register(client)
        login_from_new_ip = _from_many_ips(client)
        answers = {}
        for email in (account.email, unique_email("nobody")):
            responses = [await login_from_new_ip(email, WRONG) for _ in range(4)]
            answers[email] = [
                (r.status_code, r.json()["code"], r.headers.get("retry-after")) for r in responses
            ]
        known, unknown = answers.values()
        assert known == unknown
        assert [status for status, _, _ in known] == [401, 401, 401, 429]


def test_the_back_off_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(free_attempts=5, base_seconds=1, max_seconds=300, window_seconds=3600)
    assert [backoff.delay_after(n) for n in range(6, 16)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff.delay_after(10_000) == 300
