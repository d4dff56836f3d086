"""Durable background jobs: the `jobs` table is the truth, transports only carry ids.

Public API::

    job = await enqueue(session, "mail.send", {"to": ...}, organization_id=org.id)

    @job_handler("mail.send", max_attempts=5)
    async def send_mail(ctx: JobContext) -> dict[str, Any]: ...

    schedule("trials.expire", "0 3 * * *", "trials.expire")

See docs/jobs.md.
"""

from tenantry.core.jobs.context import JobCancelled, JobContext, JobError
from tenantry.core.jobs.enqueue import cancel, enqueue
from tenantry.core.jobs.execution import backoff_seconds
from tenantry.core.jobs.registry import (
    HandlerFunc,
    JobHandler,
    Schedule,
    get_handler,
    import_handlers,
    job_handler,
    registered_schedules,
    schedule,
)
from tenantry.core.jobs.session import open_job_session, unit_of_work
from tenantry.core.jobs.transport import (
    EmbeddedTransport,
    JobTransport,
    RedisTransport,
    bind_transport,
    build_transport,
)
from tenantry.core.jobs.worker import Worker

__all__ = [
    "EmbeddedTransport",
    "HandlerFunc",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobHandler",
    "JobTransport",
    "RedisTransport",
    "Schedule",
    "Worker",
    "backoff_seconds",
    "bind_transport",
    "build_transport",
    "cancel",
    "enqueue",
    "get_handler",
    "import_handlers",
    "job_handler",
    "open_job_session",
    "registered_schedules",
    "schedule",
    "unit_of_work",
]
