"""`tenantry serve` as a real process: refusals at start, a bounded graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def _refused_serve(tmp_path: Path, workers: str) -> tuple[int, str]:
    """Run `serve --workers <workers>` with production settings; its exit code and stderr."""
    env = _clean_env(**PRODUCTION_ENV, PORT=str(_free_port()))
    process = subprocess.Popen(
        [sys.executable, "-m", "tenantry.cli", "serve", "--workers", workers, "--no-migrate"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        _stop(process)  # had it started serving, its workers go too
    return process.returncode, stderr


def test_production_refuses_several_workers_without_redis(tmp_path: Path) -> None:
    returncode, stderr = _refused_serve(tmp_path, "2")
    assert returncode == 2
    assert "REDIS_URL" in stderr
    assert "--workers 2" in stderr


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


CORES = os.cpu_count() or 1


@pytest.mark.parametrize(
    ("overrides", "requested", "expected"),
    [
        ({}, None, 1 if CORES > 1 else CORES),  # production without Redis: one process
        ({"redis_url": "redis://127.0.0.1:6379/0"}, None, CORES),  # one per core
        ({"env": "development"}, None, 1),
        ({"env": "development"}, "auto", CORES),
        ({"redis_url": "redis://127.0.0.1:6379/0"}, "3", 3),
        ({}, "AUTO", CORES),
    ],
)
def test_serve_defaults_to_one_worker_per_core_in_production(
    overrides: dict[str, str], requested: str | None, expected: int
) -> None:
    from tenantry.cli import worker_count

    values = {k.lower(): v for k, v in PRODUCTION_ENV.items()} | overrides
    count, _ = worker_count(load_settings(_env_file=None, **values), requested)
    assert count == expected


@pytest.mark.parametrize("requested", ["0", "-1", "many", ""])
def test_serve_refuses_a_worker_count_that_is_not_one(requested: str) -> None:
    import click

    from tenantry.cli import worker_count

    values = {k.lower(): v for k, v in PRODUCTION_ENV.items()}
    with pytest.raises(click.BadParameter):
        worker_count(load_settings(_env_file=None, **values), requested)


def test_serve_help_documents_workers_auto() -> None:
    from click.testing import CliRunner

    from tenantry.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    assert "auto" in result.output
    assert "one per core" in result.output


@pytest.mark.skipif(CORES < 2, reason="one core: auto is one process")
def test_production_refuses_workers_auto_without_redis(tmp_path: Path) -> None:
    returncode, stderr = _refused_serve(tmp_path, "auto")
    assert returncode == 2
    assert "REDIS_URL" in stderr


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


def _start_serve(
    tmp_path: Path, *args: str, **settings: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = _clean_env(
        ENV="development",
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        PORT=str(port),
        JOBS_EMBEDDED_WORKER="false",
        LOG_LEVEL="WARNING",
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="64",
        PASSWORD_HASH_PARALLELISM="1",
        **settings,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tenantry.cli", "serve", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the test stops the whole group: uvicorn's workers too
    )
    return process, port


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_logged_out_token_is_refused_by_every_worker_process_without_redis(
    tmp_path: Path,
) -> None:
    """Development allows `--workers 2` without Redis: another process's cached answer
    about a session lives 5 s at most (it was 'valid until the token expires')."""
    process, port = _start_serve(
        tmp_path, "--workers", "2", "--migrate", RATE_LIMIT_ENABLED="false"
    )
    try:
        _wait_until_live(process, port)
        base = f"http://127.0.0.1:{port}/api/v1"
        with httpx.Client(base_url=base, timeout=10) as http:
            email = f"workers-{os.getpid()}-{time.monotonic_ns()}@example.com"
            data = http.post(
                "/auth/register", json={"email": email, "password": "a-long-password-1"}
            ).json()["data"]
            headers = {"Authorization": f"Bearer {data['accessToken']}"}
            org = http.post("/orgs", json={"name": "Workers"}, headers=headers).json()["data"]
            url = f"/orgs/{org['id']}/projects"
            # Fresh connections, so both processes answer (and cache the session as valid).
            warm = [httpx.get(base + url, headers=headers).status_code for _ in range(20)]
            assert set(warm) == {200}
            logout = http.post("/auth/logout", json={"refreshToken": data["refreshToken"]})
            assert logout.status_code == 204
            time.sleep(5.5)  # LOCAL_SESSION_FACT_TTL_SECONDS: the bound of another process
            after = [httpx.get(base + url, headers=headers).status_code for _ in range(40)]
        assert set(after) == {401}, after
    finally:
        _stop(process)


def test_sigterm_ends_serve_within_the_graceful_shutdown_timeout(tmp_path: Path) -> None:
    """A request that never finishes (a body that never arrives) cannot hold the process."""
    process, port = _start_serve(tmp_path, "--no-migrate", GRACEFUL_SHUTDOWN_SECONDS="1")
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
        _stop(process)
