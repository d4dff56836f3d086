"""`tenantry worker` as a real process on the embedded database (no Redis): SIGTERM is graceful."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from tenantry.cli import main
from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.jobs import cancel, enqueue, unit_of_work
from tests.core.jobs.handlers import SLOW
from tests.core.jobs.support import load, wait_until

REPO = Path(__file__).resolve().parents[3]
TENANTRY = Path(sys.executable).with_name("tenantry")


def test_cli_offers_worker_and_serve_without_worker() -> None:
    runner = CliRunner()
    assert "--concurrency" in runner.invoke(main, ["worker", "--help"]).output
    assert "--no-worker" in runner.invoke(main, ["serve", "--help"]).output
    refused = runner.invoke(main, ["worker", "--concurrency", "0"])
    assert refused.exit_code == 2


async def test_sigterm_lets_short_jobs_finish_and_releases_the_long_one(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(redis_url=None)
    database = Database(settings)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "ENV": "test",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": "",
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "INFO",
        "JOBS_IMPORT": "tests.core.jobs.handlers",
        "JOBS_POLL_SECONDS": "0.1",
        "JOBS_LEASE_SECONDS": "5",
        "JOBS_SHUTDOWN_TIMEOUT": "1",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(TENANTRY), "worker", "--concurrency", "2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with unit_of_work(database) as session:
            short = await enqueue(session, SLOW, {"seconds": 0})
            long = await enqueue(session, SLOW, {"seconds": 60})

        async def short_done_long_running() -> bool:
            first, second = await load(database, short.id), await load(database, long.id)
            return first.status == "succeeded" and second.progress == 10

        await wait_until(short_done_long_running, within=30, every=0.05)
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 15)
        released = await load(database, long.id)
        assert returncode == 0, log_path.read_text()
        assert (released.status, released.attempts, released.lease_until) == ("queued", 0, None)
        assert "releasing 1 unfinished job(s)" in log_path.read_text()
        async with unit_of_work(database) as session:
            await cancel(session, long.id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await database.dispose()
