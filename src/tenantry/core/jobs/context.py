"""What a handler receives: its job, a session, progress reporting and the cancel flag."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


class JobError(Exception):
    """A failure whose message is safe to show to the tenant (kept in `jobs.error`)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.public_message = message[:1000]
        self.retry = retry


class JobCancelled(Exception):
    """Raised by `JobContext.report` when the job was cancelled while running."""


ProgressWriter = Callable[[int, str | None], Awaitable[bool]]


@dataclass
class JobContext:
    """Handed to every handler. `session` is this attempt's own transaction.

    The worker commits `session` when the handler returns (and rolls it back when it
    raises); jobs enqueued on it are dispatched after that commit.
    """

    job_id: uuid.UUID
    job_type: str
    organization_id: uuid.UUID | None
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    session: AsyncSession
    _write_progress: ProgressWriter
    report_interval: float = 1.0
    cancel_requested: bool = False
    _last_report: float = field(default=-1e9, repr=False)

    async def report(self, progress: int | float, message: str | None = None) -> None:
        """Record progress (0-100) and a short message; raise `JobCancelled` if cancelled.

        Writes are throttled: after a write, none for `report_interval` seconds (100 %
        always writes); the cancel flag is also refreshed by the lease heartbeat, so it is
        seen here even when the write is skipped.
        """
        value = max(0, min(100, int(progress)))
        now = time.monotonic()
        if value >= 100 or now - self._last_report >= self.report_interval:
            cancelled = await self._write_progress(value, message[:500] if message else None)
            # The interval runs from the end of the write: a slow write (a loaded disk) must
            # not let the next report through at once and double the write rate.
            self._last_report = time.monotonic()
            if cancelled:
                self.cancel_requested = True
        if self.cancel_requested:
            raise JobCancelled(str(self.job_id))
