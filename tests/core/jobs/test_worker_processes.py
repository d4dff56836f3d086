"""Real `tenantry worker` processes: throughput, crash recovery, a Redis restart.

The crash test runs on both backends (SQLite workers poll the table); the others need
PostgreSQL + Redis.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.jobs import RedisTransport, bind_transport, enqueue, unit_of_work
from tenantry.core.jobs.models import Job
from tests.conftest import RUN_ID
from tests.core.jobs.handlers import COUNT, SLOW
from tests.core.jobs.support import load, wait_until

REPO = Path(__file__).resolve().parents[3]
TENANTRY = Path(sys.executable).with_name("tenantry")


class Cluster:
    """Worker processes sharing one Redis prefix, plus an enqueuing side in this process."""

    def __init__(self, settings: Settings, tmp_path: Path, lease: float) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.lease = lease
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_paths: list[Path] = []
        self.database = Database(settings)
        self.transport = RedisTransport(settings) if settings.redis_url else None
        self.redis = Redis.from_url(settings.redis_url) if settings.redis_url else None

    @property
    def stream(self) -> str:
        return f"{self.settings.redis_key_prefix}jobs"

    def spawn(self, concurrency: int, **extra_env: str) -> subprocess.Popen[bytes]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "ENV": "test",
            "DATABASE_URL": self.settings.database_url,
            "REDIS_URL": self.settings.redis_url or "",
            "REDIS_KEY_PREFIX": self.settings.redis_key_prefix,
            "SECRET_KEY": "test-secret-key-" + "x" * 32,
            "VAR_DIR": str(self.tmp_path / "var"),
            "LOG_LEVEL": "INFO",
            "JOBS_IMPORT": "tests.core.jobs.handlers",
            "JOBS_LEASE_SECONDS": str(self.lease),
            "JOBS_POLL_SECONDS": "0.2",
            "JOBS_SHUTDOWN_TIMEOUT": "5",
            **extra_env,
        }
        path = self.tmp_path / f"worker-{len(self.procs)}.log"
        self.log_paths.append(path)
        log = path.open("wb")
        proc = subprocess.Popen(
            [str(TENANTRY), "worker", "--concurrency", str(concurrency)],
            cwd=self.tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    async def wait_until_ready(self) -> None:
        """Every spawned worker has started (its consumer group exists, it is claiming)."""

        async def ready() -> bool:
            return all(
                "tenantry worker ready" in path.read_text(errors="replace")
                for path in self.log_paths
            )

        await wait_until(ready, within=30, every=0.1)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self.transport is not None:
            await self.transport.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.database.dispose()

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in self.log_paths)


@pytest.fixture
async def cluster(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Cluster] = []

    async def factory(*, lease: float, **overrides: Any) -> Cluster:
        prefix = f"tenantry-test-{RUN_ID}:jobs-{uuid.uuid4().hex[:8]}:"
        settings = make_settings(redis_key_prefix=prefix, jobs_lease_seconds=lease, **overrides)
        built = Cluster(settings, tmp_path, lease)
        if built.transport is not None:
            await built.transport.start()
        bind_transport(built.database, built.transport)
        made.append(built)
        return built

    yield factory
    for built in made:
        await built.stop()


def _pid_of(claimed_by: str | None) -> int:
    assert claimed_by is not None
    return int(claimed_by.split(":")[1])


@pytest.mark.services
@pytest.mark.slow
async def test_thousand_jobs_on_two_worker_processes_each_succeed_exactly_once(
    cluster: Callable[..., Any],
) -> None:
    jobs: Cluster = await cluster(lease=10)
    workers = [jobs.spawn(concurrency=8), jobs.spawn(concurrency=8)]
    await jobs.wait_until_ready()
    counter = f"{jobs.settings.redis_key_prefix}runs"
    started = time.monotonic()
    async with unit_of_work(jobs.database) as session:
        ids = [(await enqueue(session, COUNT, {"counter": counter})).id for _ in range(1000)]

    async def all_succeeded() -> bool:
        async with jobs.database.session(write=False) as session:
            done = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(ids), Job.status == "succeeded")
            )
        return done == len(ids)

    try:
        await wait_until(all_succeeded, within=120, every=0.25)
    except AssertionError:
        pytest.fail("not all jobs succeeded; worker logs:\n" + jobs.logs())
    elapsed = time.monotonic() - started
    async with jobs.database.session(write=False) as session:
        rows = (await session.scalars(select(Job).where(Job.id.in_(ids)))).all()
    assert jobs.redis is not None
    runs = {key.decode(): int(value) for key, value in (await jobs.redis.hgetall(counter)).items()}
    assert len(rows) == 1000
    assert {row.attempts for row in rows} == {1}
    assert runs == {str(job_id): 1 for job_id in ids}  # each handler ran exactly once
    pids = {_pid_of(row.claimed_by) for row in rows}
    assert pids == {proc.pid for proc in workers}  # both processes took part
    assert all(proc.poll() is None for proc in workers)
    print(f"1000 jobs on 2 workers: {elapsed:.1f}s")


async def test_sigkilled_worker_job_is_requeued_within_the_worker_timeout_not_the_lease(
    cluster: Callable[..., Any],
) -> None:
    # Production defaults: a 60 s lease, an 8 s worker timeout (a beat every 1.6 s).
    jobs: Cluster = await cluster(lease=60)
    assert jobs.settings.jobs_worker_timeout_seconds == 8
    victim = jobs.spawn(concurrency=2)
    await jobs.wait_until_ready()
    async with unit_of_work(jobs.database) as session:
        job = await enqueue(session, SLOW, {"seconds": 1, "first_attempt_seconds": 50})

    async def running_in_victim() -> bool:
        row = await load(jobs.database, job.id)
        return row.status == "running" and row.progress == 10

    await wait_until(running_in_victim, within=20)
    before = await load(jobs.database, job.id)
    assert _pid_of(before.claimed_by) == victim.pid
    rescuer = jobs.spawn(concurrency=2)  # already running when the victim dies
    await jobs.wait_until_ready()
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    killed_wall = dt.datetime.now(dt.UTC)
    await asyncio.to_thread(victim.wait, 10)
    assert victim.returncode == -signal.SIGKILL

    async def finished() -> bool:
        return (await load(jobs.database, job.id)).status == "succeeded"

    try:
        await wait_until(finished, within=30, every=0.1)
    except AssertionError:
        pytest.fail("the job was not resumed; worker logs:\n" + jobs.logs())
    recovered_in = time.monotonic() - killed_at
    after = await load(jobs.database, job.id)
    assert after.attempts == before.attempts + 1 == 2
    assert _pid_of(after.claimed_by) == rescuer.pid
    assert after.result == {"pid": rescuer.pid, "attempt": 2}
    assert before.lease_until is not None
    assert after.started_at is not None
    requeued_in = (after.started_at - killed_wall).total_seconds()
    # Taken over by liveness (8 s of silence, seen within a beat), not after the 60 s lease.
    assert requeued_in < 10, (requeued_in, jobs.logs())
    assert recovered_in < 12, recovered_in
    assert after.started_at < before.lease_until - dt.timedelta(seconds=30)
    assert "stopped heartbeating; requeued 1 job(s)" in jobs.logs()
    print(
        f"killed worker {victim.pid}: job claimed again after {requeued_in:.1f}s, "
        f"finished {recovered_in:.1f}s after the kill (lease 60 s)"
    )


@pytest.mark.services
@pytest.mark.slow
async def test_redis_transport_delivers_jobs_before_any_poll_would(
    cluster: Callable[..., Any],
) -> None:
    jobs: Cluster = await cluster(lease=10)
    proc = jobs.spawn(concurrency=2)
    await jobs.wait_until_ready()
    counter = f"{jobs.settings.redis_key_prefix}runs"
    # Workers claim from the table only rows overdue by 2 x poll (0.4 s) when Redis delivers;
    # a job finished faster than that came through the stream.
    durations = []
    for _ in range(5):
        started = time.monotonic()
        async with unit_of_work(jobs.database) as session:
            job = await enqueue(session, COUNT, {"counter": counter})

        async def done(job_id: uuid.UUID = job.id) -> bool:
            return (await load(jobs.database, job_id)).status == "succeeded"

        await wait_until(done, within=10, every=0.01)
        durations.append(time.monotonic() - started)
    assert min(durations) < 0.35, durations
    assert proc.poll() is None


class OwnRedis:
    """A redis-server of this test's own (never the shared one), restartable, not persisted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except (OSError, RedisError):
                return False

        try:
            await wait_until(answers, within=10, every=0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis restart test needs its own server")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = OwnRedis(directory)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.mark.services
async def test_stream_delivery_resumes_after_a_redis_restart_without_restarting_the_worker(
    cluster: Callable[..., Any], own_redis: OwnRedis
) -> None:
    # A 30 s poll: the worker's table poll claims only rows overdue by 60 s, so a job done
    # within seconds came through the stream.
    jobs: Cluster = await cluster(lease=10, redis_url=own_redis.url)
    assert jobs.redis is not None
    proc = jobs.spawn(concurrency=2, JOBS_POLL_SECONDS="30")
    await jobs.wait_until_ready()

    async def delivered_within(seconds: float) -> float:
        started = time.monotonic()
        async with unit_of_work(jobs.database) as session:  # a handler that needs no Redis
            job = await enqueue(session, SLOW, {"seconds": 0})

        async def done() -> bool:
            return (await load(jobs.database, job.id)).status == "succeeded"

        try:
            await wait_until(done, within=seconds, every=0.05)
        except AssertionError:
            pytest.fail(f"not delivered within {seconds}s; worker log:\n" + jobs.logs())
        return time.monotonic() - started

    before = await delivered_within(5)
    await own_redis.kill()  # nothing persisted: the stream and its consumer group are gone
    await own_redis.start()
    after = await delivered_within(10)
    groups = await jobs.redis.xinfo_groups(jobs.stream)
    assert [group["name"] for group in groups] == [
        f"{jobs.settings.redis_key_prefix}workers".encode()
    ]
    assert "recreating it" in jobs.logs()
    assert proc.poll() is None  # the same worker process throughout
    print(f"stream delivery: {before:.2f}s before the Redis restart, {after:.2f}s after")
