"""Task lists: per project and across projects, filters, search, cursors, no N+1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.tasks.models import Task
from tests.tenant_helpers import Org, Tenants


async def _ids(tenants: Tenants, org: Org, path: str, **params: Any) -> list[str]:
    response = await tenants.client.get(org.url(path), params=params, headers=org.owner.headers)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["data"]]


async def test_cross_project_filters(tenants: Tenants) -> None:
    org = await tenants.org()
    one, two = await org.project(), await org.project()
    helper = await org.join("member")
    a = await org.task(one, title="Fix login", assigneeId=helper.id, dueDate="2030-01-01")
    b = await org.task(two, title="fix LOGOUT", status="in_progress", dueDate="2030-06-01")
    c = await org.task(two, title="Write tests", assigneeId=helper.id)
    assert set(await _ids(tenants, org, "/tasks", limit=100)) == {a["id"], b["id"], c["id"]}
    assert await _ids(tenants, org, "/tasks", status="in_progress") == [b["id"]]
    assert set(await _ids(tenants, org, "/tasks", assigneeId=helper.id)) == {a["id"], c["id"]}
    assert set(await _ids(tenants, org, "/tasks", projectId=two["id"])) == {b["id"], c["id"]}
    assert await _ids(tenants, org, "/tasks", dueBefore="2030-03-01") == [a["id"]]
    assert set(await _ids(tenants, org, "/tasks", search="fix log")) == {a["id"], b["id"]}
    assert await _ids(tenants, org, "/tasks", search="fix", projectId=one["id"]) == [a["id"]]
    assert await _ids(tenants, org, f"/projects/{two['id']}/tasks", status="todo") == [c["id"]]
    bad = await tenants.client.get(org.url("/tasks?sortBy=priority"), headers=org.owner.headers)
    assert bad.status_code == 400


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", ["dueDate", "title", "createdAt", "updatedAt"])
async def test_task_cursor_pages_return_every_row_once(
    tenants: Tenants, sort_by: str, order: str
) -> None:
    org = await tenants.org()
    project = await org.project()
    due = [None, "2030-01-01", None, "2030-01-01", "2029-05-05", None, "2031-12-31"]
    ids = [(await org.task(project, title=f"t{i % 2}", dueDate=d))["id"] for i, d in enumerate(due)]
    for path in ("/tasks", f"/projects/{project['id']}/tasks"):
        seen: list[str] = []
        cursor: str | None = ""
        while cursor is not None:
            response = await tenants.client.get(
                org.url(path),
                params={"cursor": cursor, "limit": 2, "sortBy": sort_by, "sortOrder": order},
                headers=org.owner.headers,
            )
            assert response.status_code == 200, response.text
            seen += [t["id"] for t in response.json()["data"]]
            cursor = response.json()["meta"]["nextCursor"]
        assert sorted(seen) == sorted(ids)
        assert len(seen) == len(ids)
        offset = await _ids(tenants, org, path, limit=100, sortBy=sort_by, sortOrder=order)
        assert seen == offset


@contextmanager
def count_statements(engine: Any) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def _add_tasks(tenants: Tenants, org: Org, project_id: str, count: int) -> None:
    async with tenants.app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org.id, user_id=uuid.UUID(org.owner.id)))
        session.add_all(
            Task(project_id=uuid.UUID(project_id), title=f"bulk {i}") for i in range(count)
        )


async def test_listing_100_tasks_costs_as_many_statements_as_listing_1(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    engine = await org.engine()
    counts = {}
    for size in (1, 100):
        await _add_tasks(tenants, org, project["id"], size if size == 1 else 99)
        for path in ("/tasks", f"/projects/{project['id']}/tasks"):
            for params in ({"limit": 100}, {"limit": 100, "cursor": ""}):
                with count_statements(engine) as statements:
                    response = await tenants.client.get(
                        org.url(path), params=params, headers=org.owner.headers
                    )
                assert len(response.json()["data"]) == size
                counts[(size, path, "cursor" in params)] = len(statements)
    for (_size, path, cursor), count in counts.items():
        assert count == counts[(1, path, cursor)], counts
        assert count <= 6, counts  # begin/org setting + project + (count) + page


@pytest.mark.parametrize("path", ["/tasks", "/projects", "/audit-logs", "/projects/{p}/tasks"])
async def test_offset_pages_stop_at_max_offset_rows(tenants: Tenants, path: str) -> None:
    """Past `MAX_OFFSET_ROWS` (page * limit, 10,000 by default) a list says: use `cursor`."""
    org = await tenants.org()
    project = await org.project()
    url = org.url(path.format(p=project["id"]))
    deepest = await tenants.client.get(
        url, params={"page": 100, "limit": 100}, headers=org.owner.headers
    )
    assert deepest.status_code == 200, deepest.text
    assert deepest.json()["meta"]["page"] == 100
    too_deep = await tenants.client.get(
        url, params={"page": 101, "limit": 100}, headers=org.owner.headers
    )
    assert too_deep.status_code == 400, too_deep.text
    error = too_deep.json()
    assert error["code"] == "validation_error"
    assert "cursor" in error["message"]
    assert error["details"][0]["field"] == "page"
    also_deep = await tenants.client.get(
        url, params={"page": 10_001, "limit": 1}, headers=org.owner.headers
    )
    assert also_deep.status_code == 400


async def test_trashed_projects_hide_their_tasks_within_the_page_statement(
    tenants: Tenants,
) -> None:
    """No second SELECT for the ids of trashed projects: one statement reads the page."""
    org = await tenants.org()
    kept, trashed = await org.project(), await org.project()
    visible = await org.task(kept)
    await org.task(trashed)
    response = await tenants.client.delete(
        org.url(f"/projects/{trashed['id']}"), headers=org.owner.headers
    )
    assert response.status_code == 204, response.text
    engine = await org.engine()
    for params in ({"cursor": ""}, {"limit": 10}):
        with count_statements(engine) as statements:
            ids = await _ids(tenants, org, "/tasks", **params)
        assert ids == [visible["id"]]
        reads = [s for s in statements if "FROM tasks" in s or "FROM projects" in s]
        counting = [s for s in reads if "count(" in s.lower()]
        assert len(reads) - len(counting) == 1, reads
