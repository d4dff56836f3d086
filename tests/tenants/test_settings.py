"""The database-per-tenant settings: one-line errors naming the setting, and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantry.config import SettingsError, load_settings

SQLITE = "sqlite+aiosqlite:///./var/control.db"
POSTGRES = "postgresql+asyncpg://app:secret@db.example:5432/control"


def _settings(**values: object) -> object:
    return load_settings(_env_file=None, env="test", **values)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"tenancy_mode": "schemas"}, "TENANCY_MODE"),
        (
            {"database_url": SQLITE, "tenancy_mode": "database",
             "tenant_database_servers": POSTGRES},
            "TENANT_DATABASE_SERVERS",
        ),
        (
            {"database_url": POSTGRES, "tenancy_mode": "database",
             "tenant_database_servers": "/srv/tenants"},
            "TENANT_DATABASE_SERVERS",
        ),
        (
            {"database_url": POSTGRES, "tenancy_mode": "database",
             "tenant_database_servers": f"{POSTGRES},{POSTGRES}"},
            "TENANT_DATABASE_SERVERS",
        ),
        (
            {"tenancy_mode": "database", "tenant_database_pool_size": 10,
             "tenant_database_connection_budget": 5},
            "TENANT_DATABASE_CONNECTION_BUDGET",
        ),
        ({"tenant_engine_idle_seconds": 0}, "TENANT_ENGINE_IDLE_SECONDS"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_in_one_line_naming_the_setting(
    values: dict[str, object], named: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        _settings(**values)
    message = str(raised.value)
    assert named in message
    assert "\n" not in message


def test_tenant_servers_default_to_the_control_server_or_var_dir(tmp_path: Path) -> None:
    pg = load_settings(_env_file=None, database_url=POSTGRES, tenancy_mode="database")
    assert pg.tenant_servers == ["postgresql+asyncpg://app:secret@db.example:5432/postgres"]
    lite = load_settings(
        _env_file=None, database_url=SQLITE, tenancy_mode="database", var_dir=tmp_path
    )
    assert lite.tenant_servers == [str(tmp_path / "tenants")]
    assert not load_settings(_env_file=None).database_per_tenant  # shared by default
