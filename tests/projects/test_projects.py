"""Projects through HTTP: CRUD, mass assignment, soft delete, trash, roles, isolation."""

from __future__ import annotations

import uuid

import pytest

from tests.tenant_helpers import Tenants


async def test_create_get_update_delete_a_project(tenants: Tenants) -> None:
    org = await tenants.org()
    http, headers = tenants.client, org.owner.headers
    created = await org.project(name="Apollo", description="to the moon")
    assert created["organizationId"] == str(org.id)
    assert created["createdBy"] == created["updatedBy"] == org.owner.id
    assert (created["status"], created["version"], created["deletedAt"]) == ("active", 1, None)
    url = org.url(f"/projects/{created['id']}")

    got = await http.get(url, headers=headers)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert got.json()["data"]["name"] == "Apollo"

    changed = await http.patch(url, json={"status": "archived"}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["status"] == "archived"
    assert changed.json()["data"]["version"] == 2
    assert changed.headers["etag"] == '"2"'

    assert (await http.delete(url, headers=headers)).status_code == 204
    assert (await http.get(url, headers=headers)).status_code == 404
    assert (await http.patch(url, json={"name": "x"}, headers=headers)).status_code == 404


@pytest.mark.parametrize(
    "field",
    [
        "id",
        "organizationId",
        "createdBy",
        "updatedBy",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "version",
    ],
)
async def test_create_rejects_server_owned_fields(tenants: Tenants, field: str) -> None:
    org = await tenants.org()
    value = str(uuid.uuid4()) if field != "version" else 7
    response = await tenants.client.post(
        org.url("/projects"), json={"name": "P", field: value}, headers=org.owner.headers
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == field
    listed = await tenants.client.get(org.url("/projects"), headers=org.owner.headers)
    assert listed.json()["meta"]["total"] == 0


@pytest.mark.parametrize("field", ["id", "organizationId", "createdBy", "createdAt", "deletedAt"])
async def test_patch_rejects_server_owned_fields(tenants: Tenants, field: str) -> None:
    org = await tenants.org()
    project = await org.project()
    response = await tenants.client.patch(
        org.url(f"/projects/{project['id']}"),
        json={"name": "renamed", field: str(uuid.uuid4())},
        headers=org.owner.headers,
    )
    assert response.status_code == 400
    got = await tenants.client.get(org.url(f"/projects/{project['id']}"), headers=org.owner.headers)
    assert got.json()["data"]["name"] == project["name"]


async def test_invalid_project_bodies_are_400(tenants: Tenants) -> None:
    org = await tenants.org()
    for body in ({"name": ""}, {"name": "x" * 101}, {"name": "ok", "status": "gone"}, {}):
        response = await tenants.client.post(
            org.url("/projects"), json=body, headers=org.owner.headers
        )
        assert response.status_code == 400, body
    project = await org.project()
    response = await tenants.client.patch(
        org.url(f"/projects/{project['id']}"), json={"name": None}, headers=org.owner.headers
    )
    assert response.status_code == 400


async def test_malformed_project_id_is_400(tenants: Tenants) -> None:
    org = await tenants.org()
    response = await tenants.client.get(org.url("/projects/not-a-uuid"), headers=org.owner.headers)
    assert response.status_code == 400


async def test_restore_returns_the_project_and_trash_lists_it(tenants: Tenants) -> None:
    org = await tenants.org()
    http, headers = tenants.client, org.owner.headers
    kept, gone = await org.project(), await org.project()
    url = org.url(f"/projects/{gone['id']}")
    assert (await http.delete(url, headers=headers)).status_code == 204

    live = await http.get(org.url("/projects"), headers=headers)
    assert [p["id"] for p in live.json()["data"]] == [kept["id"]]
    trash = await http.get(org.url("/projects?deleted=only"), headers=headers)
    assert [p["id"] for p in trash.json()["data"]] == [gone["id"]]
    assert trash.json()["data"][0]["deletedAt"] is not None

    restored = await http.post(url + "/restore", headers=headers)
    assert restored.status_code == 200
    assert restored.json()["data"]["id"] == gone["id"]
    assert restored.json()["data"]["deletedAt"] is None
    assert (await http.get(url, headers=headers)).status_code == 200
    # A live project is not in the trash: restoring it again is a 404.
    assert (await http.post(url + "/restore", headers=headers)).status_code == 404


async def test_trash_needs_the_delete_permission(tenants: Tenants) -> None:
    org = await tenants.org()
    manager, member = await org.join("manager"), await org.join("member")
    http = tenants.client
    assert (
        await http.get(org.url("/projects?deleted=only"), headers=manager.headers)
    ).status_code == 200
    response = await http.get(org.url("/projects?deleted=only"), headers=member.headers)
    assert response.status_code == 403


async def test_viewer_and_member_cannot_write_projects(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    url = org.url(f"/projects/{project['id']}")
    for role in ("viewer", "member"):
        account = await org.join(role)
        http, headers = tenants.client, account.headers
        assert (await http.get(url, headers=headers)).status_code == 200
        assert (
            await http.post(org.url("/projects"), json={"name": "n"}, headers=headers)
        ).status_code == 403
        assert (await http.patch(url, json={"name": "n"}, headers=headers)).status_code == 403
        assert (await http.delete(url, headers=headers)).status_code == 403
    billing = await org.join("billing")
    assert (await tenants.client.get(url, headers=billing.headers)).status_code == 403
    manager = await org.join("manager")
    assert (await tenants.client.delete(url, headers=manager.headers)).status_code == 204


async def test_another_organizations_member_gets_404_for_every_project_route(
    tenants: Tenants,
) -> None:
    mine, theirs = await tenants.org(), await tenants.org()
    project = await mine.project()
    http, headers = tenants.client, theirs.owner.headers
    deleted = await mine.project()
    await http.delete(mine.url(f"/projects/{deleted['id']}"), headers=mine.owner.headers)
    # Their own organization's paths with my ids: scoped away.
    theirs_url = theirs.url(f"/projects/{project['id']}")
    assert (await http.get(theirs_url, headers=headers)).status_code == 404
    assert (await http.patch(theirs_url, json={"name": "x"}, headers=headers)).status_code == 404
    assert (await http.delete(theirs_url, headers=headers)).status_code == 404
    restore = theirs.url(f"/projects/{deleted['id']}/restore")
    assert (await http.post(restore, headers=headers)).status_code == 404
    # My organization's paths: not a member.
    for method, url in (
        ("GET", mine.url("/projects")),
        ("POST", mine.url("/projects")),
        ("GET", mine.url(f"/projects/{project['id']}")),
        ("PATCH", mine.url(f"/projects/{project['id']}")),
        ("DELETE", mine.url(f"/projects/{project['id']}")),
    ):
        body = {"name": "x"} if method in {"POST", "PATCH"} else None
        response = await http.request(method, url, json=body, headers=headers)
        assert response.status_code == 404, (method, url)
    listed = await http.get(theirs.url("/projects"), headers=headers)
    assert listed.json()["data"] == []
    still = await http.get(mine.url(f"/projects/{project['id']}"), headers=mine.owner.headers)
    assert still.json()["data"]["name"] == project["name"]
