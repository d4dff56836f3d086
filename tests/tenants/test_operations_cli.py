"""`tenantry tenants backup|restore|move` as real processes: progress lines, the same
service functions as the endpoints; a move killed midway (SIGKILL: no clean-up runs) is
repaired by the next `tenantry tenants provision`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tenantry.config import Settings
from tests.conftest import client_for
from tests.factories import create_org, register
from tests.tenants.conftest import Servers, cli_environment
from tests.tenants.test_operations import _spares_on, checksums, populate, two_server_app
from tests.tenants.test_provisioning import registry_row, tenants_of

TTL = "0.3"


def environment(app: FastAPI) -> dict[str, str]:
    env = cli_environment(app.state.settings)
    env["TENANT_LOCATION_TTL_SECONDS"] = TTL
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tenantry(app: FastAPI, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "tenants", *args],
        env=environment(app),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_backup_then_restore_from_the_command_line(
    tenant_app: FastAPI, tmp_path: Path
) -> None:
    app = tenant_app
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        await populate(client, org)
        before = await checksums(app, org.id)
        output = tmp_path / "org.backup"
        backed = tenantry(app, "backup", org.id, "--output", str(output))
        assert backed.returncode == 0, backed.stderr
        assert "dumping the database" in backed.stdout
        assert f"backup written to {output}" in backed.stdout
        assert output.stat().st_size > 0

        later = await client.post(
            f"{org.path}/projects", json={"name": "Later"}, headers=org.owner.headers
        )
        assert later.status_code == 201
        old = await registry_row(app, org.id)
        restored = tenantry(app, "restore", org.id, str(output))
        assert restored.returncode == 0, restored.stderr
        lines = restored.stdout.splitlines()
        for step in ("writes refused", "restoring the backup", "switching", "dropping"):
            assert any(step in line for line in lines), restored.stdout
        assert (await registry_row(app, org.id)).database != old.database
        assert await checksums(app, org.id) == before
        projects = await client.get(f"{org.path}/projects", headers=org.owner.headers)
        assert [p["name"] for p in projects.json()["data"]] == ["Apollo"]

        refused = tenantry(app, "restore", org.id, str(tmp_path / "missing"))
        assert refused.returncode == 2  # click: the file does not exist
        garbage = tmp_path / "garbage"
        garbage.write_bytes(b"not a backup")
        broken = tenantry(app, "restore", org.id, str(garbage))
        assert broken.returncode == 1
        assert "DumpInvalid" in broken.stderr, broken.stderr
        row = await registry_row(app, org.id)
        assert (row.state, row.spare_database) == ("ready", None)
        assert await checksums(app, org.id) == before


@pytest.mark.parametrize("kill_at", ["dumping", "restoring"])
async def test_a_move_killed_midway_is_repaired_by_the_next_provision(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
    kill_at: str,
) -> None:
    app = await two_server_app(build_app, control_settings, await servers.new())
    _main, other = list(tenants_of(app).servers)
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        await populate(client, org)
        before = await checksums(app, org.id)
        old = await registry_row(app, org.id)

        process = subprocess.Popen(
            [sys.executable, "-m", "tenantry.cli", "tenants", "move", org.id, "--server", other],
            env=environment(app),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if kill_at in line:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait(timeout=60)
        process.stdout.close()
        assert process.stderr is not None
        process.stderr.close()
        assert process.returncode == -signal.SIGKILL, seen
        row = await registry_row(app, org.id)
        assert row.state == "moving"  # killed before its switch: nothing undid the fence
        assert row.spare_database is not None

        repaired = tenantry(app, "provision", "--grace", "0")
        assert repaired.returncode == 0, repaired.stderr
        assert "repaired" in repaired.stdout
        row = await registry_row(app, org.id)
        assert (row.server, row.database, row.state, row.spare_database) == (
            old.server,
            old.database,
            "ready",
            None,
        )
        assert await checksums(app, org.id) == before
        assert await _spares_on(tenants_of(app), other, org.id) == []

        # And the move, run again, goes through.
        moved = tenantry(app, "move", org.id, "--server", other)
        assert moved.returncode == 0, moved.stderr
        assert (await registry_row(app, org.id)).server == other
        assert await checksums(app, org.id) == before
