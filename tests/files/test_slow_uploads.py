"""A slow upload holds no database connection, transaction or lock while its body arrives;
it ends with 408 past the body deadline; the uploads in flight are capped (429); an upload
refused after its bytes were received leaves no object behind.

The slow clients are real streaming bodies (an async generator pulled by the app as it
reads), driven through the ASGI app on both backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tenantry.modules.users.models import PlatformRole
from tests.conftest import client_for
from tests.factories import create_account
from tests.files.conftest import Tenant, make_tenant, start_files_app
from tests.files.samples import PNG
from tests.files.test_upload_download import upload
from tests.files.test_upload_rules import MULTIPART, assert_nothing_stored

GRACE = 5.0  # seconds a body may lag before the minimum rate applies
FAST = 2.0  # what "completes quickly" means while the slow uploads are in flight
# Enough to be sniffed and to reach storage before the trickle starts.
FILE_HEAD = PNG + b"\0" * 9000


def slow_settings(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "rate_limit_enabled": False,
        "body_read_grace_seconds": GRACE,
        "body_min_bytes_per_second": 64 * 1024,
        "body_read_timeout_seconds": 60,
    }
    values.update(overrides)
    return values


class SlowBody:
    """A multipart upload whose file starts at once, then trickles one byte per second.

    `trickling` is set once the app has taken the first part and asks for more: the
    request is past authentication and reading its body. The trickle stops by itself
    after `give_up` seconds (an incomplete body), so no test can hang on it.
    """

    def __init__(self, give_up: float = 20.0) -> None:
        self.trickling = asyncio.Event()
        self.give_up = give_up

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield (
            b"--b0undary\r\n"
            b'Content-Disposition: form-data; name="file"; filename="slow.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + FILE_HEAD
        )
        self.trickling.set()
        ends = time.monotonic() + self.give_up
        while time.monotonic() < ends:
            await asyncio.sleep(1)
            yield b"\0"


async def start_slow_upload(
    http: httpx.AsyncClient, org: Tenant, headers: dict[str, str]
) -> asyncio.Task[httpx.Response]:
    body = SlowBody()
    task = asyncio.create_task(http.post(org.files, content=body, headers={**headers, **MULTIPART}))
    try:
        await asyncio.wait_for(body.trickling.wait(), timeout=3 * FAST)
    except TimeoutError:
        pytest.fail("the upload did not get to its body (blocked behind another one)")
    return task


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and its duration; a call still waiting after 3 * FAST seconds fails the test."""
    started = time.monotonic()
    try:
        response = await asyncio.wait_for(call, timeout=3 * FAST)
    except TimeoutError:
        pytest.fail(f"the request was still waiting after {3 * FAST} s")
    return response, time.monotonic() - started


@pytest.fixture(scope="module")
async def slow_app(make_settings: Callable[..., Any]) -> AsyncIterator[FastAPI]:
    # A small pool, so that uploads holding connections would starve everyone else.
    settings = make_settings(**slow_settings(database_pool_size=4, database_pool_timeout=10))
    async for application in start_files_app(settings):
        yield application


async def test_slow_uploads_in_flight_slow_down_no_one_and_end_with_408_leaving_nothing(
    slow_app: FastAPI,
) -> None:
    async with client_for(slow_app) as http:
        org = await make_tenant(slow_app, http)
        other = await make_tenant(slow_app, http)
        uploaders = [org] + [await make_tenant(slow_app, http) for _ in range(3)]
        # As many slow uploads as the pool has connections, one in `org`.
        uploads = [await start_slow_upload(http, t, t.owner) for t in uploaders]

        # Another tenant: a list, a login, the readiness probe.
        listed, took = await timed(http.get(f"{other.path}/projects", headers=other.owner))
        assert listed.status_code == 200, listed.text
        assert took < FAST, took

        signed_in, took = await timed(
            http.post(
                "/api/v1/auth/login",
                json={"email": other.org.owner.email, "password": other.org.owner.password},
            )
        )
        assert signed_in.status_code == 200, signed_in.text
        assert took < FAST, took

        ready, took = await timed(http.get("/health/ready"))
        assert ready.status_code == 200, ready.text
        assert took < FAST, took

        # A create in the organization of a slow upload (it takes the organization's lock).
        created, took = await timed(
            http.post(f"{org.path}/projects", json={"name": "meanwhile"}, headers=org.owner)
        )
        assert created.status_code == 201, created.text
        assert took < FAST, took

        assert not any(task.done() for task in uploads), "the slow uploads are still in flight"
        for response in await asyncio.gather(*uploads):
            assert response.status_code == 408, response.text
            assert response.json()["code"] == "request_timeout"
        for tenant in uploaders:
            await assert_nothing_stored(http, tenant)


async def test_a_client_pausing_within_the_grace_period_uploads_normally(
    slow_app: FastAPI,
) -> None:
    async def paused() -> AsyncIterator[bytes]:
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        await asyncio.sleep(GRACE / 2)
        yield b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--b0undary--\r\n"

    async with client_for(slow_app) as http:
        org = await make_tenant(slow_app, http)
        response = await http.post(org.files, content=paused(), headers={**org.owner, **MULTIPART})
        assert response.status_code == 201, response.text


async def test_a_slow_json_body_is_408_too(slow_app: FastAPI) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"email": "'
        for _ in range(30):
            await asyncio.sleep(1)
            yield b"a"

    async with client_for(slow_app) as http:
        started = time.monotonic()
        response = await http.post(
            "/api/v1/auth/login", content=trickle(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 408, response.text
        assert response.json()["code"] == "request_timeout"
        assert time.monotonic() - started < GRACE + 3


@pytest.fixture(scope="module")
async def capped_app(make_settings: Callable[..., Any]) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        **slow_settings(
            body_read_grace_seconds=3.0,
            upload_max_concurrent_per_user=2,
            upload_max_concurrent_per_org=3,
        )
    )
    async for application in start_files_app(settings):
        yield application


async def assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


async def test_uploads_in_flight_are_capped_per_user_and_per_organization(
    capped_app: FastAPI,
) -> None:
    async with client_for(capped_app) as http:
        org = await make_tenant(capped_app, http)
        member = await org.member("member")
        third = await org.member("member")
        uploads = [await start_slow_upload(http, org, org.owner) for _ in range(2)]
        # The owner's third upload at once: the per-user cap.
        await assert_too_many(await upload(http, org.files, org.owner, PNG, filename="x.png"))
        # Another member's first: fine (3 of 3 for the organization), then the org is full.
        uploads.append(await start_slow_upload(http, org, member))
        await assert_too_many(await upload(http, org.files, third, PNG, filename="y.png"))

        for response in await asyncio.gather(*uploads):
            assert response.status_code == 408, response.text
        # The slots are given back when an upload ends, however it ends.
        accepted = await upload(http, org.files, third, PNG, filename="z.png")
        assert accepted.status_code == 201, accepted.text


@pytest.mark.services
async def test_with_redis_the_caps_hold_across_processes(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(
        **slow_settings(body_read_grace_seconds=3.0, upload_max_concurrent_per_user=1)
    )
    async for first in start_files_app(settings):
        async for second in start_files_app(settings):
            async with client_for(first) as http_first, client_for(second) as http_second:
                org = await make_tenant(first, http_first)
                in_flight = await start_slow_upload(http_first, org, org.owner)
                refused = await upload(http_second, org.files, org.owner, PNG)
                await assert_too_many(refused)
                assert (await in_flight).status_code == 408
                accepted = await upload(http_second, org.files, org.owner, PNG)
                assert accepted.status_code == 201, accepted.text


async def set_storage_limit(app: FastAPI, http: httpx.AsyncClient, org: Tenant, limit: int) -> None:
    admin = await create_account(app, http, role=PlatformRole.ADMIN)
    response = await http.put(
        f"/api/v1/admin/orgs/{org.id}/subscription",
        json={"plan": "pro", "status": "active", "overrides": {"limits": {"storageBytes": limit}}},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text


async def test_an_upload_over_the_quota_once_received_leaves_no_object(
    slow_app: FastAPI,
) -> None:
    async with client_for(slow_app) as http:
        org = await make_tenant(slow_app, http)
        await set_storage_limit(slow_app, http, org, len(PNG) + 10)
        first = await upload(http, org.files, org.owner, PNG, filename="a.png")
        assert first.status_code == 201, first.text
        kept = await org.stored_keys()
        assert len(kept) == 1

        # Room for 10 more bytes: let in, received, then refused when counted.
        refused = await upload(http, org.files, org.owner, PNG, filename="b.png")
        assert refused.status_code == 402, refused.text
        assert refused.json()["details"]["used"] == 2 * len(PNG)
        assert await org.stored_keys() == kept
        assert await org.usage() == (len(PNG), 1)

        # Full: refused before the body is received (nothing stored either).
        await set_storage_limit(slow_app, http, org, len(PNG))
        early = await upload(http, org.files, org.owner, PNG, filename="c.png")
        assert early.status_code == 402, early.text
        assert await org.stored_keys() == kept


async def test_concurrent_uploads_near_the_quota_are_counted_one_after_the_other(
    slow_app: FastAPI,
) -> None:
    async with client_for(slow_app) as http:
        org = await make_tenant(slow_app, http)
        await set_storage_limit(slow_app, http, org, len(PNG) * 3 // 2)
        responses = await asyncio.gather(
            *(upload(http, org.files, org.owner, PNG, filename=f"{i}.png") for i in range(2))
        )
        assert sorted(r.status_code for r in responses) == [201, 402]
        assert len(await org.stored_keys()) == 1
        assert await org.usage() == (len(PNG), 1)
