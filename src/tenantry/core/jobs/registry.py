"""Job handlers and schedules, declared in code with decorators.

A feature declares its handlers in its `tasks.py`::

    @job_handler("mail.send", max_attempts=5)
    async def send_mail(ctx: JobContext) -> dict[str, Any]:
        ...

`import_handlers(settings)` imports every `tenantry.modules.<feature>.tasks` module and
the modules listed in `JOBS_IMPORT`, so a worker knows every handler before it claims.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pycron

if TYPE_CHECKING:
    from tenantry.config import Settings
    from tenantry.core.jobs.context import JobContext

HandlerFunc = Callable[["JobContext"], Awaitable[Any]]
JOB_TYPE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,99}$")


@dataclass(frozen=True)
class JobHandler:
    job_type: str
    func: HandlerFunc
    max_attempts: int | None = None
    retry_base_seconds: float | None = None


@dataclass(frozen=True)
class Schedule:
    """Fire `job_type` whenever the UTC minute matches `cron` (5 fields: m h dom mon dow)."""

    name: str
    cron: str
    job_type: str
    payload: dict[str, Any] = field(default_factory=dict)

    def matches(self, minute: dt.datetime) -> bool:
        return bool(pycron.is_now(self.cron, minute))

    def latest_fire_time(self, now: dt.datetime, lookback: dt.timedelta) -> dt.datetime | None:
        """The most recent matching minute in `(now - lookback, now]` (missed runs coalesce)."""
        minute = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
        oldest = now - lookback
        while minute > oldest:
            if self.matches(minute):
                return minute
            minute -= dt.timedelta(minutes=1)
        return None


CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
CRON_ITEM = re.compile(r"^(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?$")
DAY_NAMES = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$")


def _valid_cron_field(text: str, low: int, high: int) -> bool:
    for item in text.lower().split(","):
        if high == 6 and DAY_NAMES.match(item):
            continue
        match = CRON_ITEM.match(item)
        if match is None:
            return False
        _, start, end, step = match.groups()
        numbers = [int(n) for n in (start, end) if n is not None]
        if any(not low <= n <= high for n in numbers) or (step is not None and int(step) < 1):
            return False
    return True


_handlers: dict[str, JobHandler] = {}
_schedules: dict[str, Schedule] = {}


def job_handler(
    job_type: str,
    *,
    max_attempts: int | None = None,
    retry_base_seconds: float | None = None,
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Declare `func` as the handler of `job_type` (one handler per type)."""
    if not JOB_TYPE.match(job_type):
        raise ValueError(f"job type {job_type!r}: lowercase letters, digits and ._:- only")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def register(func: HandlerFunc) -> HandlerFunc:
        existing = _handlers.get(job_type)
        if existing is not None and existing.func is not func:
            same_place = (existing.func.__module__, existing.func.__qualname__) == (
                func.__module__,
                func.__qualname__,
            )
            if not same_place:
                raise ValueError(f"job type {job_type!r} already has a handler")
        _handlers[job_type] = JobHandler(job_type, func, max_attempts, retry_base_seconds)
        return func

    return register


def schedule(
    name: str, cron: str, job_type: str, payload: dict[str, Any] | None = None
) -> Schedule:
    """Declare a cron schedule; each firing enqueues one `job_type` job, once cluster-wide."""
    if len(cron.split()) != 5:
        raise ValueError(f"schedule {name!r}: cron needs 5 fields (minute hour dom month dow)")
    bounds = zip(cron.split(), CRON_BOUNDS, strict=True)
    if not all(_valid_cron_field(text, low, high) for text, (low, high) in bounds):
        raise ValueError(f"schedule {name!r}: invalid cron expression {cron!r}")
    entry = Schedule(name, cron, job_type, dict(payload or {}))
    _schedules[name] = entry
    return entry


def get_handler(job_type: str) -> JobHandler | None:
    return _handlers.get(job_type)


def registered_schedules() -> list[Schedule]:
    return list(_schedules.values())


def unregister_schedule(name: str) -> None:
    _schedules.pop(name, None)


def import_handlers(settings: Settings) -> None:
    """Import every feature's `tasks.py` and the `JOBS_IMPORT` modules (registers handlers)."""
    from tenantry.models import import_feature_modules

    import_feature_modules("tasks")
    for name in settings.jobs_import:
        importlib.import_module(name)
