"""`tenantry serve` as a real process: refusals at start, a bounded graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tenantry.config import load_settings

PRODUCTION_ENV = {
    "ENV": "production",
    "SECRET_KEY": "k" * 48,
    "DATABASE_URL": "postgresql+asyncpg://app@127.0.0.1:1/unused",
    "MAIL_URL": "smtp://mailer:pw@127.0.0.1:1?starttls=1",
    "DATABASE_APP_ROLE": "tenantry_app",
    "METRICS_TOKEN": "m" * 32,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any tenantry setting, plus `values`."""
    from tenantry.config import Settings

    names = {name.upper() for name in Settings.model_fields}
    return {k: v for k, v in os.environ.items() if k.upper() not in names} | values


def test_production_refuses_several_workers_without_redis(tmp_path: Path) -> None:
    port = str(_free_port())
    env = _clean_env(**PRODUCTION_ENV, PORT=port)
    result = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "serve", "--workers", "2", "--no-migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "--workers 2" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "workers", "refused"),
    [
        ({}, 2, True),
        ({}, 1, False),
        ({"redis_url": "redis://127.0.0.1:6379/0"}, 4, False),
        ({"env": "development"}, 4, False),
    ],
)
def test_the_multi_process_check(overrides: dict[str, str], workers: int, refused: bool) -> None:
    from tenantry.cli import multi_process_problem

    values = {k.lower(): v for k, v in PRODUCTION_ENV.items()} | overrides
    settings = load_settings(_env_file=None, **values)
    assert (multi_process_problem(settings, workers) is not None) is refused


def _wait_until_live(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited early"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not come up")


def test_sigterm_ends_serve_within_the_graceful_shutdown_timeout(tmp_path: Path) -> None:
    """A request that never finishes (a body that never arrives) cannot hold the process."""
    port = _free_port()
    env = _clean_env(
        ENV="development",
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        PORT=str(port),
        JOBS_EMBEDDED_WORKER="false",
        GRACEFUL_SHUTDOWN_SECONDS="1",
        LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tenantry.cli", "serve", "--no-migrate"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_live(process, port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as stuck:
            stuck.sendall(
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            time.sleep(0.5)  # the request is in the app, awaiting the rest of its body
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
            elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
