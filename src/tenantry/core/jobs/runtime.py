"""Wiring: the transport (and the embedded worker) of an app, and the `tenantry worker` process."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

from redis.asyncio import Redis

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.events import PublishOnlyBus, RedisEventBus, bind_events, create_event_bus
from tenantry.core.jobs.registry import import_handlers
from tenantry.core.jobs.transport import bind_transport, build_transport
from tenantry.core.jobs.worker import Worker

log = logging.getLogger("tenantry.jobs")


class JobsRuntime:
    """One process's job machinery: the transport `enqueue` notifies, and maybe a worker."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        run_worker: bool,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.run_worker = run_worker
        self.concurrency = concurrency
        self.transport = build_transport(settings)
        self.worker: Worker | None = None

    async def start(self) -> None:
        import_handlers(self.settings)
        try:
            await self.transport.start()
        except Exception:
            # Jobs stay safe in the table; workers claim them by polling until Redis is back.
            log.exception("job transport unavailable at start")
        bind_transport(self.database, self.transport)
        if self.run_worker:
            self.worker = Worker(
                self.database, self.settings, self.transport, concurrency=self.concurrency
            )
            self.worker.start()

    def reported_progress(self, job_id: uuid.UUID) -> tuple[int, str | None] | None:
        """A running job's last progress report not yet in its row (SQLite), if it runs here."""
        if self.worker is None:
            return None
        return self.worker.executor.reported.get(job_id)

    async def stop(self) -> None:
        """Graceful: running jobs get `JOBS_SHUTDOWN_TIMEOUT` to finish, the rest are released."""
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        bind_transport(self.database, None)
        await self.transport.close()


async def run_worker_process(
    settings: Settings,
    *,
    concurrency: int | None = None,
    setup: Callable[[Database], AbstractAsyncContextManager[None]] | None = None,
) -> None:
    """`tenantry worker`: run until SIGTERM/SIGINT, then shut down gracefully.

    `setup(database)` (from the CLI) binds what feature modules' jobs need for the run.
    """
    from tenantry.core.mail import bind_mail, create_mailer  # registers `mail.send`
    from tenantry.core.storage import bind_storage, create_storage

    database = Database(settings)
    bind_mail(database, create_mailer(settings))
    bind_storage(database, create_storage(settings))
    events = _worker_events(settings)
    bind_events(database, events)  # job states and progress reach every API process
    runtime = JobsRuntime(settings, database, run_worker=True, concurrency=concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(database.dispose)
        if events is not None:
            stack.push_async_callback(events.close)
        if setup is not None:
            await stack.enter_async_context(setup(database))
        try:
            await runtime.start()
            log.info("tenantry worker ready")
            await stop.wait()
            log.info("tenantry worker stopping: no new claims, finishing running jobs")
        finally:
            await runtime.stop()


def _worker_events(settings: Settings) -> PublishOnlyBus | None:
    """With Redis, the worker announces job events on the organizations' streams.

    Without it a separate worker has nobody to tell (the embedded worker of `serve` shares
    the API process's bus instead).
    """
    if settings.redis_url is None:
        return None
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    bus = create_event_bus(settings, redis)
    assert isinstance(bus, RedisEventBus)
    return PublishOnlyBus(bus, redis)
