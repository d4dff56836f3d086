"""`tenantry tenants migrate --all` and `provision`, as real processes: a broken tenant is
reported while the others are migrated, a second run continues where the first stopped;
a process killed in the middle of provisioning or of `migrate --all` leaves a state the next
run repairs; `tenants delete`; the progress display."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import text

from tenantry.core.migrate import alembic_config
from tenantry.modules.tenants.cli import ProgressLines
from tenantry.modules.tenants.servers import database_name, schema_revision, stored_object_keys
from tenantry.modules.tenants.service import Outcome, TenantDatabases
from tests.conftest import client_for
from tests.factories import create_org, register
from tests.tenants.conftest import cli_environment
from tests.tenants.test_provisioning import registry_row, tenants_of

PREVIOUS = "0020"  # the revision before the tenant registry's


def tenantry(app: FastAPI, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantry.cli", *args],
        env=cli_environment(app.state.settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def _orgs(app: FastAPI, count: int) -> list[uuid.UUID]:
    async with client_for(app) as client:
        return [
            uuid.UUID((await create_org(client, await register(client))).id) for _ in range(count)
        ]


async def _execute(url: str, sql: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


async def test_migrate_all_reports_a_broken_tenant_and_a_second_run_continues(
    tenant_app: FastAPI,
) -> None:
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    (server,) = tenants.servers.values()
    orgs = await _orgs(tenant_app, 3)
    urls = {org: server.database_url(database_name(org)) for org in orgs}
    for url in urls.values():  # each tenant one revision behind
        await asyncio.to_thread(command.downgrade, alembic_config(url), PREVIOUS)
    broken = orgs[1]
    # The next revision creates this table: its upgrade fails on this tenant only.
    await _execute(urls[broken], "CREATE TABLE tenant_databases (in_the_way INTEGER)")

    first = tenantry(tenant_app, "tenants", "migrate", "--all", "--concurrency", "2")
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"{broken} failed" in first.stderr
    assert first.stdout.count(" migrated:") == 2, first.stdout + first.stderr
    head = tenants.head_revision()
    revisions = {org: await schema_revision(url) for org, url in urls.items()}
    assert revisions == {orgs[0]: head, broken: PREVIOUS, orgs[2]: head}
    async with tenant_app.state.database.engine.connect() as connection:
        errors = dict(
            (
                await connection.execute(
                    text("SELECT organization_id, last_error FROM tenant_databases")
                )
            ).all()
        )
    failed = {uuid.UUID(str(org)) for org, error in errors.items() if error is not None}
    assert failed == {broken}

    await _execute(urls[broken], "DROP TABLE tenant_databases")
    second = tenantry(tenant_app, "tenants", "migrate", "--all")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count(" migrated:") == 1, second.stdout
    assert second.stdout.count(" up to date: ") == 2, second.stdout
    assert await schema_revision(urls[broken]) == head


async def test_a_migrate_all_killed_midway_is_finished_by_the_next_run(
    tenant_app: FastAPI,
) -> None:
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    (server,) = tenants.servers.values()
    orgs = await _orgs(tenant_app, 4)
    urls = {org: server.database_url(database_name(org)) for org in orgs}
    for url in urls.values():  # each tenant one revision behind
        await asyncio.to_thread(command.downgrade, alembic_config(url), PREVIOUS)
    argv = [sys.executable, "-m", "tenantry.cli", "tenants", "migrate", "--all"]
    process = subprocess.Popen(
        [*argv, "--concurrency", "1"],
        env=cli_environment(tenant_app.state.settings) | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # killed (no clean-up) once the first tenant is done
        seen.append(line)
        if " migrated:" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, seen
    head = tenants.head_revision()
    before = {org: await schema_revision(url) for org, url in urls.items()}
    assert set(before.values()) <= {PREVIOUS, head}  # each tenant wholly upgraded, or not
    assert list(before.values()).count(head) >= 1

    again = tenantry(tenant_app, "tenants", "migrate", "--all")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count(" up to date: ") == list(before.values()).count(head)
    assert again.stdout.count(" migrated:") == list(before.values()).count(PREVIOUS)
    assert {await schema_revision(url) for url in urls.values()} == {head}
    async with tenant_app.state.database.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT state, schema_revision, last_error FROM tenant_databases")
            )
        ).all()
    assert {tuple(row) for row in rows} == {("ready", head, None)}


CRASH = textwrap.dedent(
    """
    import asyncio, os, signal, sys, uuid
    from tenantry.config import load_settings
    from tenantry.core.db import Database
    from tenantry.modules.tenants.service import TenantDatabases

    async def main():
        settings = load_settings()
        tenants = TenantDatabases(settings, Database(settings))
        for org in sys.argv[1:]:
            record = await tenants.register(uuid.UUID(org))  # committed: `provisioning`
            await tenants.server_of(record).create_database(record.database)
        print("created, dying before the migration", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


async def test_a_provisioning_killed_midway_is_repaired_by_the_next_run(
    tenant_app: FastAPI,
) -> None:
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    (server,) = tenants.servers.values()
    (existing,) = await _orgs(tenant_app, 1)
    await tenants.discard(existing)  # an organization still without its database
    vanished = uuid.uuid4()  # a creation whose organization never committed
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(existing), str(vanished)],
        env=cli_environment(tenant_app.state.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    for org in (existing, vanished):
        assert await server.database_exists(database_name(org))
        assert await schema_revision(server.database_url(database_name(org))) is None

    repaired = tenantry(tenant_app, "tenants", "provision", "--grace", "0")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"{existing} provisioned" in repaired.stdout
    assert f"{vanished} removed" in repaired.stdout
    assert not await server.database_exists(database_name(vanished))
    url = server.database_url(database_name(existing))
    assert await schema_revision(url) == tenants.head_revision()
    async with tenant_app.state.database.engine.connect() as connection:
        states = list(await connection.scalars(text("SELECT state FROM tenant_databases")))
    assert states == ["ready"]
    assert (await tenants.registry.locate(existing)) is not None  # served again


async def test_delete_drops_the_organizations_database_once_its_slug_is_confirmed(
    tenant_app: FastAPI,
) -> None:
    app = tenant_app
    settings = app.state.settings
    env = cli_environment(settings)
    if settings.redis_url is not None:  # the serving app's caches: told through Redis
        env |= {"REDIS_URL": settings.redis_url, "REDIS_KEY_PREFIX": settings.redis_key_prefix}

    def delete(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tenantry.cli", "tenants", "delete", *args],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        project = await client.post(
            f"/api/v1/orgs/{org.id}/projects", json={"name": "Kept?"}, headers=org.owner.headers
        )
        assert project.status_code == 201, project.text
        path = f"/api/v1/orgs/{org.id}/projects/{project.json()['data']['id']}"
        uploaded = await client.post(
            f"/api/v1/orgs/{org.id}/files",
            files={"file": ("notes.txt", b"kept until deleted", "text/plain")},
            headers=org.owner.headers,
        )
        assert uploaded.status_code == 201, uploaded.text
        row = await registry_row(app, org.id)
        assert row is not None
        (server,) = tenants_of(app).servers.values()
        assert await server.database_exists(row.database)
        storage = app.state.services.storage
        (key,) = await stored_object_keys(server.database_url(row.database))
        assert await storage.exists(key)

        for refused in (
            delete(org.id, "--confirm", "not-its-slug"),
            delete(str(uuid.uuid4()), "--confirm", org.slug),
        ):
            assert refused.returncode == 1, refused.stdout
            assert await server.database_exists(row.database)
        assert "nothing was deleted" in refused.stderr or "No organization" in refused.stderr
        assert (await client.get(path, headers=org.owner.headers)).status_code == 200

        deleted = delete(org.id, "--confirm", org.slug)
        assert deleted.returncode == 0, deleted.stderr
        assert "its database dropped" in deleted.stdout
        assert not await server.database_exists(row.database)
        assert await registry_row(app, org.id) is None
        assert not await storage.exists(key)  # the uploads go with the database
        gone = await client.get(path, headers=org.owner.headers)
        if settings.redis_url is not None:  # the serving process was told (near cache)
            for _ in range(20):
                if gone.status_code == 404:
                    break
                await asyncio.sleep(0.1)  # the invalidation travels over pub/sub
                gone = await client.get(path, headers=org.owner.headers)
            assert gone.status_code == 404, gone.text
        else:  # embedded: the server's own cache may still admit the member for a while,
            # but nothing of the organization is served any more
            assert gone.status_code in (404, 503), gone.text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    org = uuid.uuid4()
    done = Outcome(org, "migrated", "0021 -> 0022", 0.5)
    failed = Outcome(org, "failed", "connection refused", 0.1)

    terminal = _Terminal()
    progress = ProgressLines(3, stream=terminal)
    for outcome in (done, failed, done):
        progress(outcome)
    shown = terminal.getvalue()
    assert "tenants" in shown
    assert "3/3" in shown  # the bar's position
    assert "#" in shown  # the bar itself
    assert f"[2/3] {org} failed: connection refused (0.1 s)" in shown  # failures stay readable
    assert f"[1/3] {org} migrated" not in shown  # successes only move the bar

    lines = ProgressLines(2)  # not a terminal: one line per tenant
    lines(done)
    lines(failed)
    captured = capsys.readouterr()
    assert f"[1/2] {org} migrated: 0021 -> 0022 (0.5 s)" in captured.out
    assert f"[2/2] {org} failed: connection refused (0.1 s)" in captured.err
