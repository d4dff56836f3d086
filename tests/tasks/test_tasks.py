"""Tasks through HTTP: CRUD, workflow, assignees, soft delete, roles, isolation."""

from __future__ import annotations

import uuid

import pytest

from tests.factories import create_org, register
from tests.tenant_helpers import Tenants


async def test_create_get_update_delete_restore_a_task(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project, title="Write docs", priority="high", dueDate="2030-01-31")
    assert (task["status"], task["isComplete"], task["version"]) == ("todo", False, 1)
    assert (task["projectId"], task["organizationId"]) == (project["id"], str(org.id))
    assert task["dueDate"] == "2030-01-31"
    assert task["createdBy"] == org.owner.id
    url, headers = org.url(f"/projects/{project['id']}/tasks/{task['id']}"), org.owner.headers

    got = await tenants.client.get(url, headers=headers)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    done = await tenants.client.patch(url, json={"status": "done"}, headers=headers)
    assert done.status_code == 200
    assert (done.json()["data"]["isComplete"], done.json()["data"]["version"]) == (True, 2)

    assert (await tenants.client.delete(url, headers=headers)).status_code == 204
    assert (await tenants.client.get(url, headers=headers)).status_code == 404
    restored = await tenants.client.post(url + "/restore", headers=headers)
    assert restored.status_code == 200
    assert restored.json()["data"]["deletedAt"] is None
    assert (await tenants.client.get(url, headers=headers)).status_code == 200


async def test_a_task_is_only_found_under_its_own_project(tenants: Tenants) -> None:
    org = await tenants.org()
    home, other = await org.project(), await org.project()
    task = await org.task(home)
    url = org.url(f"/projects/{other['id']}/tasks/{task['id']}")
    assert (await tenants.client.get(url, headers=org.owner.headers)).status_code == 404


async def test_a_missing_task_and_a_trashed_project_say_which_is_missing(
    tenants: Tenants,
) -> None:
    # The task and its project load in one query; only a miss asks which one is absent.
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    unknown = org.url(f"/projects/{project['id']}/tasks/{uuid.uuid4()}")
    response = await tenants.client.get(unknown, headers=org.owner.headers)
    assert (response.status_code, response.json()["message"]) == (404, "Task not found")
    deleted = await tenants.client.delete(
        org.url(f"/projects/{project['id']}"), headers=org.owner.headers
    )
    assert deleted.status_code == 204
    url = org.url(f"/projects/{project['id']}/tasks/{task['id']}")
    response = await tenants.client.get(url, headers=org.owner.headers)
    assert (response.status_code, response.json()["message"]) == (404, "Project not found")


@pytest.mark.parametrize(
    "field",
    ["id", "organizationId", "projectId", "createdBy", "updatedAt", "isComplete", "version"],
)
async def test_task_create_rejects_server_owned_and_read_only_fields(
    tenants: Tenants, field: str
) -> None:
    org = await tenants.org()
    project = await org.project()
    value = True if field == "isComplete" else 3 if field == "version" else str(uuid.uuid4())
    response = await tenants.client.post(
        org.url(f"/projects/{project['id']}/tasks"),
        json={"title": "t", field: value},
        headers=org.owner.headers,
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == field


async def test_is_complete_cannot_be_patched(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    url = org.url(f"/projects/{project['id']}/tasks/{task['id']}")
    response = await tenants.client.patch(url, json={"isComplete": True}, headers=org.owner.headers)
    assert response.status_code == 400


ALLOWED = {
    "todo": {"in_progress", "done", "archived"},
    "in_progress": {"todo", "done", "archived"},
    "done": {"in_progress", "archived"},
    "archived": {"todo"},
}
PATH_TO = {
    "todo": [],
    "in_progress": ["in_progress"],
    "done": ["done"],
    "archived": ["archived"],
}


@pytest.mark.parametrize("start", list(ALLOWED))
@pytest.mark.parametrize("target", list(ALLOWED))
async def test_status_transitions_follow_the_workflow(
    tenants: Tenants, start: str, target: str
) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    url, headers = org.url(f"/projects/{project['id']}/tasks/{task['id']}"), org.owner.headers
    for step in PATH_TO[start]:
        assert (
            await tenants.client.patch(url, json={"status": step}, headers=headers)
        ).status_code == 200
    response = await tenants.client.patch(url, json={"status": target}, headers=headers)
    if target == start or target in ALLOWED[start]:
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == target
    else:
        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "conflict"
        assert set(body["details"][0]["allowed"]) == ALLOWED[start]
        current = await tenants.client.get(url, headers=headers)
        assert current.json()["data"]["status"] == start


async def test_assignee_must_be_a_member(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    colleague = await org.join("member")
    task = await org.task(project, assigneeId=colleague.id)
    assert task["assigneeId"] == colleague.id
    url = org.url(f"/projects/{project['id']}/tasks")
    stranger = str(uuid.uuid4())
    response = await tenants.client.post(
        url, json={"title": "t", "assigneeId": stranger}, headers=org.owner.headers
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "assigneeId"
    patch = await tenants.client.patch(
        f"{url}/{task['id']}", json={"assigneeId": stranger}, headers=org.owner.headers
    )
    assert patch.status_code == 400
    outsider = await register(tenants.client)  # a real account, member of another org only
    await create_org(tenants.client, outsider)
    response = await tenants.client.post(
        url, json={"title": "t", "assigneeId": outsider.id}, headers=org.owner.headers
    )
    assert response.status_code == 400
    cleared = await tenants.client.patch(
        f"{url}/{task['id']}", json={"assigneeId": None}, headers=org.owner.headers
    )
    assert cleared.status_code == 200
    assert cleared.json()["data"]["assigneeId"] is None


async def test_stale_task_versions_are_refused(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    url, headers = org.url(f"/projects/{project['id']}/tasks/{task['id']}"), org.owner.headers
    assert (
        await tenants.client.patch(url, json={"title": "a", "version": 1}, headers=headers)
    ).status_code == 200
    stale = await tenants.client.patch(url, json={"title": "b", "version": 1}, headers=headers)
    assert (stale.status_code, stale.json()["code"]) == (409, "version_conflict")
    stale_header = await tenants.client.patch(
        url, json={"title": "b"}, headers={**headers, "If-Match": '"1"'}
    )
    assert stale_header.status_code == 412


async def test_member_deletes_and_restores_only_own_tasks(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    member = await org.join("member")
    theirs = await org.task(project)  # created by the owner
    mine = await org.task(project, as_=member)
    base = org.url(f"/projects/{project['id']}/tasks")
    http = tenants.client
    # tasks:write is not `:own` for members: they may edit any task.
    assert (
        await http.patch(f"{base}/{theirs['id']}", json={"priority": "low"}, headers=member.headers)
    ).status_code == 200
    assert (await http.delete(f"{base}/{theirs['id']}", headers=member.headers)).status_code == 403
    assert (await http.delete(f"{base}/{mine['id']}", headers=member.headers)).status_code == 204
    await http.delete(f"{base}/{theirs['id']}", headers=org.owner.headers)
    trash = await http.get(f"{base}?deleted=only", headers=member.headers)
    assert [t["id"] for t in trash.json()["data"]] == [mine["id"]]
    owner_trash = await http.get(f"{base}?deleted=only", headers=org.owner.headers)
    assert {t["id"] for t in owner_trash.json()["data"]} == {mine["id"], theirs["id"]}
    assert (
        await http.post(f"{base}/{theirs['id']}/restore", headers=member.headers)
    ).status_code == 403
    assert (
        await http.post(f"{base}/{mine['id']}/restore", headers=member.headers)
    ).status_code == 200


async def test_viewer_reads_but_cannot_write_tasks(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    viewer = await org.join("viewer")
    base, http = org.url(f"/projects/{project['id']}/tasks"), tenants.client
    assert (await http.get(f"{base}/{task['id']}", headers=viewer.headers)).status_code == 200
    assert (await http.post(base, json={"title": "t"}, headers=viewer.headers)).status_code == 403
    assert (
        await http.patch(f"{base}/{task['id']}", json={"title": "t"}, headers=viewer.headers)
    ).status_code == 403
    assert (await http.delete(f"{base}/{task['id']}", headers=viewer.headers)).status_code == 403
    bulk = await http.patch(
        org.url("/tasks/bulk"),
        json={"ids": [task["id"]], "changes": {"priority": "low"}},
        headers=viewer.headers,
    )
    assert bulk.status_code == 403


async def test_tasks_of_a_deleted_project_are_unreachable(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    headers, http = org.owner.headers, tenants.client
    await http.delete(org.url(f"/projects/{project['id']}"), headers=headers)
    assert (
        await http.get(org.url(f"/projects/{project['id']}/tasks/{task['id']}"), headers=headers)
    ).status_code == 404
    listed = await http.get(org.url("/tasks"), headers=headers)
    assert listed.json()["data"] == []
    assert listed.json()["meta"]["total"] == 0
    await http.post(org.url(f"/projects/{project['id']}/restore"), headers=headers)
    listed = await http.get(org.url("/tasks"), headers=headers)
    assert [t["id"] for t in listed.json()["data"]] == [task["id"]]


async def test_another_organizations_member_gets_404_for_every_task_route(
    tenants: Tenants,
) -> None:
    mine, theirs = await tenants.org(), await tenants.org()
    project = await mine.project()
    task = await mine.task(project)
    http, headers = tenants.client, theirs.owner.headers
    their_project = await theirs.project()
    for base in (
        theirs.url(f"/projects/{project['id']}/tasks"),  # my project id in their org
        theirs.url(f"/projects/{their_project['id']}/tasks"),  # my task id under their project
        mine.url(f"/projects/{project['id']}/tasks"),  # my org: not a member
    ):
        for method, url, body in (
            ("GET", f"{base}/{task['id']}", None),
            ("PATCH", f"{base}/{task['id']}", {"title": "x"}),
            ("DELETE", f"{base}/{task['id']}", None),
            ("POST", f"{base}/{task['id']}/restore", None),
        ):
            response = await http.request(method, url, json=body, headers=headers)
            assert response.status_code == 404, (method, url)
    assert (await http.get(mine.url("/tasks"), headers=headers)).status_code == 404
    searched = await http.get(theirs.url(f"/tasks?projectId={project['id']}"), headers=headers)
    assert searched.json()["data"] == []
    bulk = await http.patch(
        theirs.url("/tasks/bulk"),
        json={"ids": [task["id"]], "changes": {"title": "x"}},
        headers=headers,
    )
    assert bulk.status_code == 400  # `title` is not a bulk change
    bulk = await http.patch(
        theirs.url("/tasks/bulk"),
        json={"ids": [task["id"]], "changes": {"priority": "low"}},
        headers=headers,
    )
    assert bulk.json()["data"] == {
        "updated": [],
        "failed": [{"id": task["id"], "code": "not_found"}],
    }
    unchanged = await http.get(
        mine.url(f"/projects/{project['id']}/tasks/{task['id']}"), headers=mine.owner.headers
    )
    assert unchanged.json()["data"]["version"] == 1
