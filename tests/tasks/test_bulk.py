"""`PATCH /orgs/{orgId}/tasks/bulk`: each item authorized and reported on its own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.tasks.test_task_lists import count_statements
from tests.tenant_helpers import Org, Tenants


async def _bulk(
    tenants: Tenants, org: Org, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    return await tenants.client.patch(
        org.url("/tasks/bulk"), json=body, headers=headers or org.owner.headers
    )


async def _task(tenants: Tenants, org: Org, task: dict[str, Any]) -> dict[str, Any]:
    url = org.url(f"/projects/{task['projectId']}/tasks/{task['id']}")
    data: dict[str, Any] = (await tenants.client.get(url, headers=org.owner.headers)).json()["data"]
    return data


async def test_bulk_update_reports_updated_and_failed_items(tenants: Tenants) -> None:
    org, other = await tenants.org(), await tenants.org()
    project = await org.project()
    todo = await org.task(project)
    archived = await org.task(project, status="archived")  # archived → done is not allowed
    deleted = await org.task(project)
    await tenants.client.delete(
        org.url(f"/projects/{project['id']}/tasks/{deleted['id']}"), headers=org.owner.headers
    )
    foreign = await other.task(await other.project())
    missing = str(uuid.uuid4())
    ids = [todo["id"], archived["id"], deleted["id"], foreign["id"], missing, todo["id"]]
    response = await _bulk(
        tenants, org, {"ids": ids, "changes": {"status": "done", "priority": "urgent"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "updated": [todo["id"]],
        "failed": [
            {"id": archived["id"], "code": "conflict"},
            {"id": deleted["id"], "code": "not_found"},
            {"id": foreign["id"], "code": "not_found"},
            {"id": missing, "code": "not_found"},
        ],
    }
    now = await _task(tenants, org, todo)
    assert (now["status"], now["priority"], now["isComplete"], now["version"]) == (
        "done",
        "urgent",
        True,
        2,
    )
    assert (await _task(tenants, org, archived))["status"] == "archived"
    assert (await _task(tenants, other, foreign))["version"] == 1


async def test_bulk_checks_own_row_permissions_item_by_item(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    member = await org.join("member")
    mine = await org.task(project)  # created by the owner, for whom the key acts
    theirs = await org.task(project, as_=member)
    own_only = await org.key(["tasks:read", "tasks:write:own"])
    body = {"ids": [mine["id"], theirs["id"]], "changes": {"priority": "low"}}
    response = await _bulk(tenants, org, body, own_only)
    assert response.json()["data"] == {
        "updated": [mine["id"]],
        "failed": [{"id": theirs["id"], "code": "forbidden"}],
    }
    assert (await _task(tenants, org, theirs))["priority"] == "medium"
    assert (await _task(tenants, org, mine))["priority"] == "low"


async def test_bulk_writes_one_audit_entry_per_updated_task_and_none_for_a_failed_one(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    project = await org.project()
    member = await org.join("member")
    first, second = await org.task(project, as_=member), await org.task(project, as_=member)
    theirs = await org.task(project)  # not in the batch: no entry
    done = await org.task(project, status="archived")  # archived → done: conflict
    body = {"ids": [first["id"], second["id"], done["id"]], "changes": {"status": "done"}}
    response = await _bulk(tenants, org, body, member.headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["updated"] == [first["id"], second["id"]]
    assert isinstance(data["updated"], list)
    assert data["failed"] == [{"id": done["id"], "code": "conflict"}]
    for task, expected in ((first, 1), (second, 1), (done, 0), (theirs, 0)):
        entries = await tenants.client.get(
            org.url("/audit-logs"),
            params={"entityId": task["id"], "action": "task.updated"},
            headers=org.owner.headers,
        )
        rows = entries.json()["data"]
        assert len(rows) == expected
        if expected:
            assert rows[0]["actorUserId"] == str(member.id)
            assert rows[0]["changes"]["status"] == ["todo", "done"]


@pytest.mark.parametrize(
    "body",
    [
        {"ids": [], "changes": {"priority": "low"}},
        {"ids": [str(uuid.uuid4()) for _ in range(101)], "changes": {"priority": "low"}},
        {"ids": [str(uuid.uuid4())], "changes": {}},
        {"ids": [str(uuid.uuid4())], "changes": {"organizationId": str(uuid.uuid4())}},
        {"ids": [str(uuid.uuid4())], "changes": {"status": None}},
        {"ids": ["nope"], "changes": {"priority": "low"}},
        {"ids": [str(uuid.uuid4())], "changes": {"priority": "low"}, "extra": 1},
    ],
)
async def test_invalid_bulk_requests_are_400(tenants: Tenants, body: dict[str, Any]) -> None:
    org = await tenants.org()
    assert (await _bulk(tenants, org, body)).status_code == 400


async def test_bulk_assignee_must_be_a_member(tenants: Tenants) -> None:
    org = await tenants.org()
    task = await org.task(await org.project())
    response = await _bulk(
        tenants, org, {"ids": [task["id"]], "changes": {"assigneeId": str(uuid.uuid4())}}
    )
    assert response.status_code == 400
    helper = await org.join("member")
    response = await _bulk(
        tenants, org, {"ids": [task["id"]], "changes": {"assigneeId": helper.id}}
    )
    assert response.json()["data"]["updated"] == [task["id"]]


async def test_task_create_honours_idempotency_keys(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    url = org.url(f"/projects/{project['id']}/tasks")
    headers = {**org.owner.headers, "Idempotency-Key": "task-key"}
    first = await tenants.client.post(url, json={"title": "once"}, headers=headers)
    again = await tenants.client.post(url, json={"title": "once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other_project = await org.project()
    elsewhere = await tenants.client.post(
        org.url(f"/projects/{other_project['id']}/tasks"), json={"title": "once"}, headers=headers
    )
    assert elsewhere.status_code == 409  # same key, another request
    listed = await tenants.client.get(org.url("/tasks"), headers=org.owner.headers)
    assert listed.json()["meta"]["total"] == 1


@pytest.mark.services
async def test_concurrent_task_patches_with_the_same_version_exactly_one_wins(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    url = org.url(f"/projects/{project['id']}/tasks/{task['id']}")
    responses = await asyncio.gather(
        *(
            tenants.client.patch(
                url, json={"title": f"w{i}", "version": 1}, headers=org.owner.headers
            )
            for i in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
    assert all(r.json()["code"] == "version_conflict" for r in responses if r.status_code == 409)


async def test_bulk_of_50_mixed_rows_is_batched_and_audited_row_by_row(tenants: Tenants) -> None:
    """50 rows: a constant number of statements, one audit entry per row that changed."""
    org = await tenants.org()
    project = await org.project()
    member = await org.join("member")
    own_only = await org.key(["tasks:read", "tasks:write:own"])  # acts for the owner
    mine = [await org.task(project) for _ in range(44)]
    already = await org.task(project, priority="urgent", status="in_progress")  # no change
    archived = await org.task(project, status="archived")  # archived → in_progress: conflict
    theirs = await org.task(project, as_=member)  # not the key's creator: forbidden
    other = await tenants.org()
    foreign = await other.task(await other.project())
    ids = [t["id"] for t in (*mine, already, archived, theirs, foreign)]
    ids.append(str(uuid.uuid4()))  # missing
    engine = tenants.app.state.database.engine
    body = {"ids": ids, "changes": {"status": "in_progress", "priority": "urgent"}}
    with count_statements(engine) as statements:
        response = await _bulk(tenants, org, body, own_only)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "updated": [t["id"] for t in (*mine, already)],
        "failed": [
            {"id": archived["id"], "code": "conflict"},
            {"id": theirs["id"], "code": "forbidden"},
            {"id": foreign["id"], "code": "not_found"},
            {"id": ids[-1], "code": "not_found"},
        ],
    }
    task_statements = [s for s in statements if "tasks" in s or "audit_logs" in s]
    updates = [s for s in task_statements if s.lstrip().upper().startswith("UPDATE TASKS")]
    others = [s for s in task_statements if s not in updates]
    # load, audit (+ assignee); MariaDB has no UPDATE ... RETURNING: + lock, + read back
    mariadb = engine.dialect.name == "mariadb"
    assert len(others) <= (5 if mariadb else 3), others
    # One UPDATE for all rows; on SQLite one per row (its planner walks the organization's
    # index for a list of keys: test_the_bulk_update_finds_its_rows_by_primary_key_on_sqlite)
    sqlite = engine.dialect.name == "sqlite"
    assert len(updates) == (len(mine) if sqlite else 1), updates
    for task, version in ((mine[0], 2), (mine[-1], 2), (already, 1), (archived, 1)):
        now = await _task(tenants, org, task)
        assert now["version"] == version
    assert (await _task(tenants, org, mine[7]))["status"] == "in_progress"
    assert (await _task(tenants, org, theirs))["priority"] == "medium"
    entries = await tenants.client.get(
        org.url("/audit-logs"),
        params={"action": "task.updated", "limit": 100},
        headers=org.owner.headers,
    )
    rows = entries.json()["data"]
    assert sorted(r["entityId"] for r in rows) == sorted(t["id"] for t in mine)
    assert all(
        r["changes"] == {"status": ["todo", "in_progress"], "priority": ["medium", "urgent"]}
        for r in rows
    )


_WAITING_FOR_A_ROW_LOCK = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE 'UPDATE tasks SET%'",
    # MariaDB's bulk update first locks its rows by key (SELECT ... FOR UPDATE, core/dml.py).
    "mariadb": "SELECT count(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
}


@pytest.mark.services
async def test_bulk_reports_a_row_changed_concurrently_as_a_version_conflict(
    tenants: Tenants, database_url: str
) -> None:
    """A row updated by another transaction between the load and the write is not written."""
    org = await tenants.org()
    project = await org.project()
    raced, calm = await org.task(project), await org.task(project)
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as other:
            await other.execute(
                text(
                    "UPDATE tasks SET version = version + 1, title = 'raced' WHERE id = :id"
                ).bindparams(bindparam("id", type_=Uuid())),
                {"id": uuid.UUID(raced["id"])},
            )
            body = {"ids": [raced["id"], calm["id"]], "changes": {"priority": "low"}}
            pending = asyncio.create_task(_bulk(tenants, org, body))
            waiting = text(_WAITING_FOR_A_ROW_LOCK[other.dialect.name])
            async with engine.connect() as watcher:
                for _ in range(200):  # until the bulk update waits for the row lock
                    found = await watcher.scalar(waiting)
                    await watcher.rollback()  # PostgreSQL: a fresh activity snapshot each time
                    if found:
                        break
                    await asyncio.sleep(0.02)
                else:
                    pytest.fail("the bulk update never waited for the row lock")
            await other.commit()
            response = await pending
    finally:
        await engine.dispose()
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "updated": [calm["id"]],
        "failed": [{"id": raced["id"], "code": "version_conflict"}],
    }
    now = await _task(tenants, org, raced)
    assert (now["title"], now["priority"], now["version"]) == ("raced", "medium", 2)


async def test_the_bulk_update_finds_its_rows_by_primary_key_on_sqlite(tenants: Tenants) -> None:
    """SQLite searched the organization's partial index for a list of keys (statistics or
    not): a bulk update walked all of a big organization's tasks (0.3 s at 200,000)."""
    from sqlalchemy import event

    engine = tenants.app.state.database.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner; PostgreSQL plans a row-value IN on the primary key")
    org = await tenants.org()
    project = await org.project()
    tasks = [await org.task(project) for _ in range(3)]
    updates: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE TASKS"):
            updates.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        body = {"ids": [t["id"] for t in tasks], "changes": {"priority": "urgent"}}
        response = await _bulk(tenants, org, body)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
    assert response.status_code == 200, response.text
    assert len(updates) == len(tasks)
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        for statement, parameters in updates:
            explain = f"EXPLAIN QUERY PLAN {statement}"
            cursor = await raw.driver_connection.execute(explain, parameters)
            plan = " ".join(str(row[-1]) for row in await cursor.fetchall())
            assert "sqlite_autoindex_tasks_1 (id=?)" in plan, (statement, plan)
