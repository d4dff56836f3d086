"""Email through durable jobs: queued in the caller's transaction, sent by the worker, retried."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope
from fastapi import FastAPI
from jinja2 import UndefinedError
from sqlalchemy import select

from tenantry.core.jobs import unit_of_work
from tenantry.core.jobs.models import Job
from tenantry.core.mail import InvalidAddress, queue_email
from tenantry.core.mail.outbox import JOB_TYPE

RESET = {"link": "https://app.example.com/reset?token=SECRET-TOKEN-123", "expires_in": "1 hour"}


async def job_row(app: FastAPI, job_id: uuid.UUID) -> Job:
    async with app.state.database.session(write=False) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def wait_for_status(app: FastAPI, job_id: uuid.UUID, status: str, within: float = 15) -> Job:
    deadline = time.monotonic() + within
    while True:
        job = await job_row(app, job_id)
        if job.status == status:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job is {job.status} (error: {job.error}), not {status}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def mail_app(build_app, tmp_path: Path) -> FastAPI:
    app: FastAPI = await build_app(
        var_dir=tmp_path, jobs_embedded_worker=True, jobs_poll_seconds=0.1
    )
    return app


def mail_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "mail").glob("*.eml"))


def mail_to(tmp_path: Path, recipient: str) -> list[email.message.EmailMessage]:
    """Messages for `recipient` (the embedded worker also delivers other tests' queued mail)."""
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in mail_files(tmp_path)
    ]
    return [m for m in messages if m["To"] == recipient]


async def test_a_queued_email_is_sent_by_the_worker_after_commit(
    mail_app: FastAPI, tmp_path: Path
) -> None:
    async with unit_of_work(mail_app.state.database) as session:
        job_id = await queue_email(
            session, to="Reset.Me@example.com", template="password_reset", context=RESET
        )
    job = await wait_for_status(mail_app, job_id, "succeeded")
    assert job.type == JOB_TYPE
    [message] = mail_to(tmp_path, "Reset.Me@example.com")
    assert "SECRET-TOKEN-123" in message.get_body(preferencelist=("plain",)).get_content()


async def test_the_job_row_holds_neither_the_token_nor_the_recipient(mail_app: FastAPI) -> None:
    async with unit_of_work(mail_app.state.database) as session:
        job_id = await queue_email(
            session, to="private.person@example.com", template="password_reset", context=RESET
        )
    job = await wait_for_status(mail_app, job_id, "succeeded")
    stored = repr(job.payload) + repr(job.result) + repr(job.error)
    assert "SECRET-TOKEN-123" not in stored
    assert "private.person" not in stored
    assert job.payload["template"] == "password_reset"


async def count_mail_jobs(app: FastAPI) -> int:
    async with app.state.database.session(write=False) as session:
        return len((await session.scalars(select(Job.id).where(Job.type == JOB_TYPE))).all())


async def test_a_rolled_back_transaction_queues_and_sends_nothing(
    mail_app: FastAPI, tmp_path: Path
) -> None:
    before = await count_mail_jobs(mail_app)

    async def failing_request() -> None:
        async with unit_of_work(mail_app.state.database) as session:
            await queue_email(
                session, to="rollback@example.com", template="password_reset", context=RESET
            )
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        await failing_request()
    await asyncio.sleep(0.5)  # several worker polls
    assert await count_mail_jobs(mail_app) == before
    assert not any("rollback@example.com" in path.read_text() for path in mail_files(tmp_path))


@pytest.mark.parametrize(
    ("to", "template", "context", "error"),
    [
        ("not an address", "password_reset", RESET, InvalidAddress),
        ("a@example.com\r\nBcc: x@example.com", "password_reset", RESET, InvalidAddress),
        ("a@example.com", "no_such_template", RESET, ValueError),
        ("a@example.com", "invitation", {"link": "https://x.example.com"}, UndefinedError),
    ],
)
async def test_bad_email_requests_fail_at_queue_time_and_enqueue_nothing(
    mail_app: FastAPI, to: str, template: str, context: dict[str, Any], error: type[Exception]
) -> None:
    before = await count_mail_jobs(mail_app)
    with pytest.raises(error):
        async with unit_of_work(mail_app.state.database) as session:
            await queue_email(session, to=to, template=template, context=context)
    assert await count_mail_jobs(mail_app) == before


class FlakyInbox:
    """Answers the first message to `retry@example.com` with a temporary failure (451),
    accepts the next ones (mail other tests queued is accepted and ignored)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.received: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Envelope) -> str:
        if envelope.rcpt_tos != ["retry@example.com"]:
            return "250 OK"
        self.attempts += 1
        if self.attempts == 1:
            return "451 Requested action aborted: try again later"
        self.received.append(envelope)
        return "250 OK"


@pytest.fixture
async def flaky_smtp() -> AsyncIterator[tuple[FlakyInbox, int]]:
    inbox = FlakyInbox()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(inbox, hostname="localhost"), host="127.0.0.1", port=0
    )
    try:
        yield inbox, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_failed_smtp_delivery_is_retried_by_the_job_until_it_succeeds(
    build_app, flaky_smtp: tuple[FlakyInbox, int]
) -> None:
    inbox, port = flaky_smtp
    app: FastAPI = await build_app(
        mail_url=f"smtp://127.0.0.1:{port}?timeout=5",
        jobs_embedded_worker=True,
        jobs_poll_seconds=0.1,
        jobs_retry_base_seconds=0,
    )
    async with unit_of_work(app.state.database) as session:
        job_id = await queue_email(
            session, to="retry@example.com", template="verify_email", context=RESET
        )
    job = await wait_for_status(app, job_id, "succeeded")
    assert job.attempts == 2
    assert inbox.attempts == 2
    [envelope] = inbox.received
    assert envelope.rcpt_tos == ["retry@example.com"]
