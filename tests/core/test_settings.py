"""Settings are validated once: a bad value stops the process with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenantry.config import SettingsError, load_settings

PRODUCTION_OK = {
    "_env_file": None,
    "env": "production",
    "secret_key": "k" * 48,
    "database_url": "postgresql+asyncpg://app@db/tenantry",
    "mail_url": "smtp://mailer:pw@smtp.example.com:587?starttls=1",
    "database_app_role": "tenantry_app",
    "metrics_token": "m" * 32,
}


def test_production_accepts_a_safe_configuration() -> None:
    settings = load_settings(**PRODUCTION_OK)
    assert settings.is_production


@pytest.mark.parametrize(
    ("override", "mentions"),
    [
        ({"secret_key": None}, "SECRET_KEY"),
        ({"secret_key": "short"}, "SECRET_KEY"),
        ({"database_url": "sqlite+aiosqlite:///./var/x.db"}, "DATABASE_URL"),
        ({"debug": True}, "DEBUG"),
        ({"cors_origins": "*"}, "CORS_ORIGINS"),
        ({"mail_url": None}, "MAIL_URL"),
        ({"mail_url": "file:///srv/mail"}, "MAIL_URL"),
        ({"database_app_role": None}, "DATABASE_APP_ROLE=tenantry_app"),
        ({"database_app_role": ""}, "docs/tenancy.md"),
        ({"metrics_token": None}, "METRICS_TOKEN"),
        ({"metrics_token": "short"}, "METRICS_TOKEN"),
    ],
)
def test_production_refuses_unsafe_settings(override: dict[str, object], mentions: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**{**PRODUCTION_OK, **override})
    assert mentions in str(caught.value)
    assert "\n" not in str(caught.value)


def test_production_serves_public_metrics_only_when_told() -> None:
    settings = load_settings(**{**PRODUCTION_OK, "metrics_token": None, "metrics_public": True})
    assert settings.metrics_token is None


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"database_url": "mysql://x"}, "DATABASE_URL"),
        ({"port": "eighty"}, "PORT"),
        ({"log_level": "LOUD"}, "LOG_LEVEL"),
        ({"max_body_bytes": -1}, "MAX_BODY_BYTES"),
        ({"cors_origins": "app.example.com"}, "CORS_ORIGINS"),
        ({"redis_url": "http://redis"}, "REDIS_URL"),
    ],
)
def test_a_bad_value_names_the_setting(override: dict[str, object], name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **override)
    assert str(caught.value).startswith(f"invalid setting {name}:")


MARIADB_URL = "mariadb+asyncmy://root@127.0.0.1:3306/tenantry"


@pytest.mark.parametrize(
    "url", ["mysql+asyncmy://root@db/x", "mysql+aiomysql://root@db/x", "mariadb://root@db/x"]
)
def test_mysql_urls_are_refused(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, database_url=url)
    assert str(caught.value).startswith("invalid setting DATABASE_URL:")


def test_mariadb_is_a_supported_database() -> None:
    settings = load_settings(_env_file=None, database_url=MARIADB_URL)
    assert settings.is_mariadb
    assert not settings.is_sqlite


def test_production_accepts_mariadb_without_an_app_role() -> None:
    """No row-level security on MariaDB (docs/tenancy.md): no role to demand."""
    production = {**PRODUCTION_OK, "database_url": MARIADB_URL, "database_app_role": None}
    assert load_settings(**production).is_mariadb


def test_mariadb_refuses_the_postgresql_app_role() -> None:
    # Setting it would suggest a row-level security that MariaDB does not have.
    for env in ("development", "production"):
        with pytest.raises(SettingsError) as caught:
            load_settings(**{**PRODUCTION_OK, "env": env, "database_url": MARIADB_URL})
        assert str(caught.value).startswith("invalid setting DATABASE_APP_ROLE:")


def test_production_postgresql_still_requires_the_app_role() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**{**PRODUCTION_OK, "database_app_role": None})
    assert "DATABASE_APP_ROLE=tenantry_app" in str(caught.value)


def test_lists_are_comma_separated_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    settings = load_settings(_env_file=None)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_development_secret_key_is_random_and_persisted(tmp_path: Path) -> None:
    first = load_settings(_env_file=None, var_dir=tmp_path).secret()
    second = load_settings(_env_file=None, var_dir=tmp_path).secret()
    assert first == second
    assert len(first) >= 48
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert load_settings(_env_file=None, var_dir=tmp_path / "other").secret() != first


def test_the_cli_stops_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = {**os.environ, "ENV": "production", "SECRET_KEY": "short", "DATABASE_URL": ""}
    env.pop("DATABASE_URL")
    result = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tenantry: invalid setting")
    assert "SECRET_KEY" in lines[0]
