"""DATABASE_APP_ROLE: a plain role name, handed to PostgreSQL at connection start."""

from __future__ import annotations

import pytest

from tenantry.config import SettingsError, load_settings
from tenantry.core.rls import rls_statements


@pytest.mark.parametrize("bad", ["Tenantry", "app; DROP TABLE x", "1app", "a" * 64])
def test_app_role_must_be_a_plain_role_name(bad: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_APP_ROLE"):
        load_settings(_env_file=None, database_app_role=bad)


def test_empty_app_role_means_unset() -> None:
    assert load_settings(_env_file=None, database_app_role="").database_app_role is None


def test_rls_helper_refuses_unsafe_table_names() -> None:
    with pytest.raises(ValueError, match="identifier"):
        rls_statements('projects"; DROP TABLE users; --')
    assert any("FORCE ROW LEVEL SECURITY" in s for s in rls_statements("projects"))
