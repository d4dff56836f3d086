"""Hot reads (core/hotreads.py): scoped by tenancy's one mechanism, same bytes as before."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import bindparam, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from tenantry.core.hotreads import HotRead
from tenantry.core.tenancy import ScopedRead, TenantScopeError, scoped_select
from tenantry.modules.orgs.models import Organization
from tenantry.modules.projects.service import PROJECT_BY_ID
from tenantry.modules.tasks.models import Task
from tenantry.modules.tasks.service import TASK_BY_ID
from tests.conftest import USES_MARIADB
from tests.tenant_helpers import Tenants

HOT_READS = {"task by id": TASK_BY_ID, "project by id": PROJECT_BY_ID}


@pytest.mark.parametrize("name", sorted(HOT_READS))
@pytest.mark.parametrize(
    "dialect",
    [
        postgresql.asyncpg.dialect(),
        sqlite.dialect(),
        make_url("mariadb+asyncmy://").get_dialect()(),
    ],
    ids=["postgresql", "sqlite", "mariadb"],
)
def test_every_table_of_a_hot_read_carries_the_tenant_scope(name: str, dialect: Any) -> None:
    read = HOT_READS[name].read
    sql = str(read.statement.compile(dialect=dialect))
    for table in read.tables:
        assert f"{table}.organization_id = " in sql
        assert f"{table}.deleted_at IS NULL" in sql


def test_a_hot_read_is_only_made_of_a_scoped_select() -> None:
    with pytest.raises(TypeError):
        HotRead(select(Task.__table__).where(Task.__table__.c.id == bindparam("id")))  # type: ignore[arg-type]
    with pytest.raises(TenantScopeError):
        scoped_select(Organization)  # type: ignore[arg-type]


def test_a_scoped_read_without_the_organization_parameter_is_refused() -> None:
    bare = HotRead(ScopedRead(select(*Task.__table__.c), ("tasks",)))
    with pytest.raises(RuntimeError, match="organization criteria"):
        bare.postgres_sql(postgresql.asyncpg.dialect())


def _starlette_bytes(body: bytes) -> bytes:
    """What FastAPI's default JSONResponse renders for the same content."""
    return json.dumps(
        json.loads(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()


async def test_get_by_id_answers_the_bytes_and_headers_of_the_model_path(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    tricky = 'Ünïcode "quotes" \\ back\tslash \u2028 \U0001f600 </script>'
    project = await org.project(description=tricky)
    task = await org.task(project, title=tricky, description=tricky, dueDate="2030-01-31")
    project_url = org.url(f"/projects/{project['id']}")
    task_url = f"{project_url}/tasks/{task['id']}"
    headers = org.owner.headers
    for url, change in ((task_url, {"priority": "high"}), (project_url, {"name": "Renamed"})):
        # PATCH answers through FastAPI's validation and renderer: the reference.
        patched = await tenants.client.patch(url, json=change, headers=headers)
        got = await tenants.client.get(url, headers=headers)
        assert got.status_code == patched.status_code == 200
        assert got.content == _starlette_bytes(got.content)
        reference, hot = patched.json(), got.json()
        assert hot.keys() == reference.keys() == {"success", "data", "timestamp"}
        assert hot["data"] == reference["data"]
        assert list(hot["data"]) == list(reference["data"])  # same key order
        assert got.headers["etag"] == patched.headers["etag"] == '"2"'
        assert got.headers["content-type"] == patched.headers["content-type"]
        assert got.headers["content-length"] == str(len(got.content))


async def test_another_organizations_ids_get_the_same_404(tenants: Tenants) -> None:
    mine, theirs = await tenants.org(), await tenants.org()
    project = await theirs.project()
    task = await theirs.task(project)
    own_project = await mine.project()
    headers = mine.owner.headers
    unknown = uuid.uuid4()
    pairs = [
        (f"/projects/{project['id']}", f"/projects/{unknown}"),
        (f"/projects/{project['id']}/tasks/{task['id']}", f"/projects/{unknown}/tasks/{unknown}"),
        (
            f"/projects/{own_project['id']}/tasks/{task['id']}",
            f"/projects/{own_project['id']}/tasks/{unknown}",
        ),
    ]
    for foreign, missing in pairs:
        a = await tenants.client.get(mine.url(foreign), headers=headers)
        b = await tenants.client.get(mine.url(missing), headers=headers)
        assert a.status_code == b.status_code == 404
        fields = ("statusCode", "error", "code", "message", "details")
        assert [a.json().get(f) for f in fields] == [b.json().get(f) for f in fields]


async def test_list_pages_are_validated_once_and_rendered_as_before(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project(description="ünïcode")
    for _ in range(3):
        await org.task(project, title='Tâche \u2028 "x"')
    tasks_url = org.url(f"/projects/{project['id']}/tasks")
    for url in (tasks_url, tasks_url + "?limit=2&cursor=", org.url("/projects"), org.url("/tasks")):
        got = await tenants.client.get(url, headers=org.owner.headers)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/json"
        assert got.content == _starlette_bytes(got.content)
        body = got.json()
        assert list(body) == ["success", "data", "meta", "timestamp"]
        assert body["data"]
        assert {item["organizationId"] for item in body["data"]} == {str(org.id)}


@pytest.mark.skipif(
    not USES_MARIADB,
    reason="MariaDB's count (PostgreSQL's is on the wire: tests/core/test_org_setting.py)",
)
async def test_a_repeated_get_by_id_sends_one_statement(tenants: Tenants) -> None:
    """MariaDB reads through the session's connection (its BEGIN and COMMIT are protocol
    commands of the driver): the read is the request's only SQL statement — no
    per-connection setting, no second lookup."""
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    project_path = f"/projects/{project['id']}"
    engine = tenants.app.state.database.engine.sync_engine
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    for path in (f"{project_path}/tasks/{task['id']}", project_path):
        url = org.url(path)
        assert (await tenants.client.get(url, headers=org.owner.headers)).status_code == 200
        event.listen(engine, "before_cursor_execute", count)
        try:
            response = await tenants.client.get(url, headers=org.owner.headers)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert response.status_code == 200
        assert len(statements) == 1, statements
        assert statements.pop().lstrip().upper().startswith("SELECT")
