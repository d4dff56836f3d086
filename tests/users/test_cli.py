"""`tenantry createsuperuser` and `tenantry seed` against the test database."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from tenantry.cli import main
from tests.factories import login, unique_email


@pytest.fixture
def cli_env(database_url: str, tmp_path) -> dict[str, str]:
    return {
        "ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "VAR_DIR": str(tmp_path),
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64",
        "PASSWORD_HASH_PARALLELISM": "1",
        "LOG_LEVEL": "WARNING",
    }


def test_createsuperuser_prompts_for_the_password_and_creates_a_super_admin(
    cli_env: dict[str, str],
) -> None:
    email = unique_email("root")
    result = CliRunner().invoke(
        main,
        ["createsuperuser", "--email", email.upper()],
        input="a root password\na root password\n",
        env=cli_env,
    )
    assert result.exit_code == 0, result.output
    assert f"super admin {email} created" in result.output
    assert "a root password" not in result.output


async def test_the_created_super_admin_can_sign_in_with_its_role(
    cli_env: dict[str, str], client: httpx.AsyncClient
) -> None:
    import asyncio

    email = unique_email("root")
    env = cli_env | {"TENANTRY_SUPERUSER_PASSWORD": "from the environment"}
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["createsuperuser", "--email", email], env=env
    )
    assert result.exit_code == 0, result.output
    account = await login(client, email, "from the environment")
    assert account.user["role"] == "SUPER_ADMIN"
    assert account.user["emailVerified"] is True


def test_createsuperuser_refuses_a_short_password_or_a_bad_email(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    short = runner.invoke(
        main,
        ["createsuperuser", "--email", unique_email()],
        env=cli_env | {"TENANTRY_SUPERUSER_PASSWORD": "short"},
    )
    assert short.exit_code == 2
    assert "8 to 128" in short.output
    bad = runner.invoke(
        main,
        ["createsuperuser", "--email", "nope"],
        env=cli_env | {"TENANTRY_SUPERUSER_PASSWORD": "long enough password"},
    )
    assert bad.exit_code == 2


def test_seed_is_idempotent(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["seed"], env=cli_env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, ["seed"], env=cli_env)
    assert second.exit_code == 0, second.output
    assert second.output.count("already exists (unchanged)") == 2
