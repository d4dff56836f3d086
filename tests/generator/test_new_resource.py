"""The generator end to end: in a copy of the project, generate a resource and run its tests.

Slow (a type check and part of the suite in a subprocess), so it runs under
`make test-services` only: the copy always tests against its own SQLite file, so the
MariaDB run would repeat exactly the same work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import USES_MARIADB

ROOT = Path(__file__).parents[2]
COMMAND = ["new-resource", "invoices", "--field", "number:str", "--field", "amount:decimal"]
MORE_FIELDS = ["due:date", "paid:bool", "note:text", "sent_at:datetime", "ref:uuid", "n:int"]


def _copy_project(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "TENANTRY_"))}
    env["PYTHONPATH"] = str(cwd / "src")  # the copy's code, not this checkout's
    env["TENANTRY_TEST_BACKEND"] = "sqlite"  # never migrate the shared test database
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.skipif(USES_MARIADB, reason="the copy tests on SQLite: runs in make test-services")
def test_generated_resource_passes_its_tests_lint_and_types(tmp_path: Path) -> None:
    project = tmp_path / "project"
    _copy_project(project)
    fields = [arg for f in MORE_FIELDS for arg in ("--field", f)]

    made = _run(["-m", "tenantry.cli", *COMMAND, *fields], project)
    assert made.returncode == 0, made.stderr
    assert (project / "src/tenantry/modules/invoices/router.py").exists()
    assert '"invoices",' in (project / "src/tenantry/core/permissions.py").read_text()

    again = _run(["-m", "tenantry.cli", *COMMAND], project)
    assert again.returncode == 2
    assert "exists already" in again.stderr

    lint = _run(["-m", "ruff", "check", "src", "tests"], project)
    assert lint.returncode == 0, lint.stdout
    formatted = _run(["-m", "ruff", "format", "--check", "src", "tests"], project)
    assert formatted.returncode == 0, formatted.stdout
    types = _run(["-m", "mypy"], project)
    assert types.returncode == 0, types.stdout
    tests = _run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/invoices",
            "tests/orgs/test_isolation.py",
            "tests/orgs/test_role_matrix.py",
            "tests/core/test_permissions.py",
            "tests/core/test_migrations.py",
        ],
        project,
    )
    assert tests.returncode == 0, tests.stdout[-5000:]
    assert " passed" in tests.stdout
