"""The deployment files, checked without a container engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_is_multi_stage_locked_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.MULTILINE)
    assert stages == ["build", "runtime"]
    assert "uv sync --frozen --no-dev" in text
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER tenantry$", runtime, flags=re.MULTILINE)
    assert "ENV=production" in runtime
    assert "HEALTHCHECK" in runtime


def test_compose_services_are_health_checked_and_wired() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    assert {"api", "worker", "migrate", "postgres", "redis"} <= set(services)
    for name in ("api", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    api = services["api"]
    assert api["environment"]["ENV"] == "production"
    assert api["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--no-worker" in api["command"]
    worker = services["worker"]
    assert worker["command"][:2] == ["tenantry", "worker"]
    assert worker["environment"] == api["environment"]


def test_readme_configuration_table_lists_every_setting() -> None:
    from tenantry.config import Settings

    readme = (ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert missing == [], f"README configuration table lacks {missing}"
