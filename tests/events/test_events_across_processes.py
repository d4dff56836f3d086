"""Events across real processes: two `tenantry serve` and one `tenantry worker` sharing
PostgreSQL and Redis. A change committed through process A, or a job run by the worker,
reaches a stream opened on process B; a reconnection to A replays from the organization's
Redis stream; a logout-all through A ends B's stream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RUN_ID, TEST_REDIS_URL
from tests.test_serve import _clean_env, _free_port, _stop, _wait_until_live

pytestmark = pytest.mark.services


@contextmanager
def _processes(tmp_path: Path, database_url: str) -> Iterator[tuple[str, str]]:
    env = _clean_env(
        ENV="development",
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        # Under the run's prefix: its keys go with the run's (tests/conftest.py `redis_url`).
        REDIS_KEY_PREFIX=f"tenantry-test-{RUN_ID}:events-{uuid.uuid4().hex[:8]}:",
        SECRET_KEY="events-across-processes-" + "k" * 32,
        JOBS_EMBEDDED_WORKER="false",
        JOBS_POLL_SECONDS="0.2",
        RATE_LIMIT_ENABLED="false",
        LOG_LEVEL="WARNING",
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="64",
        PASSWORD_HASH_PARALLELISM="1",
    )
    started: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(2):
            port = _free_port()
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tenantry.cli", "serve", "--no-worker", "--no-migrate"],
                    env={**env, "PORT": str(port)},
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            ports.append(port)
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "tenantry.cli", "worker"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        for process, port in zip(started, ports, strict=False):
            _wait_until_live(process, port)
        yield f"http://127.0.0.1:{ports[0]}/api/v1", f"http://127.0.0.1:{ports[1]}/api/v1"
    finally:
        for process in started:
            _stop(process)


class Reader:
    """The events of one streamed response, parsed as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        frame: dict[str, Any] = {}
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if "event" in frame:
                        self.events.put_nowait(frame)
                    frame = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    frame[name] = json.loads(value) if name == "data" else value
        except httpx.HTTPError:
            pass  # the server ended the stream
        finally:
            self.events.put_nowait(None)

    async def take(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                frame = await self.events.get()
                assert frame is not None, f"stream ended after {found}"
                found.append(frame)
        return found

    async def until(self, name: str, timeout: float = 30) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while not found or found[-1]["event"] != name:
                frame = await self.events.get()
                assert frame is not None, f"stream ended after {found}"
                found.append(frame)
        return found


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> AsyncIterator[Reader]:
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        reader = Reader(response)
        try:
            await asyncio.sleep(0.3)  # the subscription is live once the headers came
            yield reader
        finally:
            reader.task.cancel()


async def test_events_cross_api_and_worker_processes(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    with _processes(tmp_path, database_url) as (a, b):
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as http:
            email = f"events-{os.getpid()}-{time.monotonic_ns()}@example.com"
            data = (
                await http.post(
                    f"{a}/auth/register", json={"email": email, "password": "a-long-password-1"}
                )
            ).json()["data"]
            headers = {"Authorization": f"Bearer {data['accessToken']}"}
            org = (await http.post(f"{a}/orgs", json={"name": "Events"}, headers=headers)).json()
            org_path = f"/orgs/{org['data']['id']}"

            async with stream(http, f"{b}{org_path}/events", headers) as on_b:
                created = await http.post(
                    f"{a}{org_path}/projects", json={"name": "from A"}, headers=headers
                )
                assert created.status_code == 201
                [event] = await on_b.take(1)
                assert event["event"] == "project.created"
                assert event["data"]["entityId"] == created.json()["data"]["id"]
                exported = await http.post(f"{a}{org_path}/exports", json={}, headers=headers)
                assert exported.status_code == 202
                job_events = await on_b.until("job.succeeded")
                names = [e["event"] for e in job_events]
                assert names[0] == "job.queued"
                assert "job.running" in names
                last_id = job_events[-1]["id"]

            for i in range(3):  # while nobody listens
                await http.post(
                    f"{a}{org_path}/projects", json={"name": f"away {i}"}, headers=headers
                )
            resumed = {**headers, "Last-Event-ID": last_id}
            async with stream(http, f"{a}{org_path}/events", resumed) as on_a:
                replayed = await on_a.take(3)
                assert [e["data"]["changes"]["name"][1] for e in replayed] == [
                    f"away {i}" for i in range(3)
                ]
                with pytest.raises(TimeoutError):  # nothing more: no duplicate
                    await asyncio.wait_for(on_a.events.get(), 0.5)

            async with stream(http, f"{b}{org_path}/events", headers) as on_b:
                started = time.monotonic()
                out = await http.post(f"{a}/auth/logout-all", headers=headers)
                assert out.status_code == 204
                async with asyncio.timeout(15):
                    while (await on_b.events.get()) is not None:
                        pass
                assert time.monotonic() - started < 15
