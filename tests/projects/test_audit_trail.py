"""Every create/update/delete/restore of projects and tasks writes one audit entry."""

from __future__ import annotations

from typing import Any

from tests.tenant_helpers import Org, Tenants


async def _entries(tenants: Tenants, org: Org, entity_id: str) -> list[dict[str, Any]]:
    response = await tenants.client.get(
        org.url("/audit-logs"),
        params={"entityId": entity_id, "limit": 100},
        headers=org.owner.headers,
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return sorted(entries, key=lambda e: e["createdAt"])


async def test_project_lifecycle_is_audited_with_changes(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project(name="Audited")
    url, headers = org.url(f"/projects/{project['id']}"), org.owner.headers
    await tenants.client.patch(url, json={"name": "Renamed", "status": "active"}, headers=headers)
    await tenants.client.delete(url, headers=headers)
    await tenants.client.post(url + "/restore", headers=headers)
    entries = await _entries(tenants, org, project["id"])
    assert [e["action"] for e in entries] == [
        "project.created",
        "project.updated",
        "project.deleted",
        "project.restored",
    ]
    assert {e["entityType"] for e in entries} == {"project"}
    assert {e["actorUserId"] for e in entries} == {org.owner.id}
    assert entries[0]["changes"]["name"] == [None, "Audited"]
    assert entries[1]["changes"] == {"name": ["Audited", "Renamed"]}  # status did not change
    assert (
        entries[2]["changes"][
            "deletedAt" if "deletedAt" in entries[2]["changes"] else "deleted_at"
        ][0]
        is None
    )


async def test_task_changes_and_bulk_updates_are_audited(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project, title="Audited task")
    url, headers = org.url(f"/projects/{project['id']}/tasks/{task['id']}"), org.owner.headers
    await tenants.client.patch(url, json={"status": "in_progress"}, headers=headers)
    await tenants.client.patch(
        org.url("/tasks/bulk"),
        json={"ids": [task["id"]], "changes": {"status": "done"}},
        headers=headers,
    )
    await tenants.client.delete(url, headers=headers)
    await tenants.client.post(url + "/restore", headers=headers)
    entries = await _entries(tenants, org, task["id"])
    assert [e["action"] for e in entries] == [
        "task.created",
        "task.updated",
        "task.updated",
        "task.deleted",
        "task.restored",
    ]
    assert [list(e["changes"].values()) for e in entries[1:3]] == [
        [["todo", "in_progress"]],
        [["in_progress", "done"]],
    ]


async def test_refused_changes_write_no_audit_entry(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project, status="archived")
    url, headers = org.url(f"/projects/{project['id']}/tasks/{task['id']}"), org.owner.headers
    assert (
        await tenants.client.patch(url, json={"status": "done"}, headers=headers)
    ).status_code == 409
    stale = await tenants.client.patch(url, json={"title": "x", "version": 9}, headers=headers)
    assert stale.status_code == 409
    bulk = await tenants.client.patch(
        org.url("/tasks/bulk"),
        json={"ids": [task["id"]], "changes": {"status": "done"}},
        headers=headers,
    )
    assert bulk.json()["data"]["failed"] == [{"id": task["id"], "code": "conflict"}]
    assert [e["action"] for e in await _entries(tenants, org, task["id"])] == ["task.created"]
