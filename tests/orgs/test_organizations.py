"""Organizations: create with owner membership and trial, slugs, list mine, get, update, delete."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from fastapi import FastAPI

from tests.factories import add_member, create_org, register


async def test_create_makes_the_caller_owner_and_starts_a_30_day_trial(
    client: httpx.AsyncClient,
) -> None:
    owner = await register(client)
    response = await client.post(
        "/api/v1/orgs", json={"name": "Acme Widgets"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["myRole"] == "owner"
    assert data["plan"] == "trial"
    assert data["subscriptionStatus"] == "trialing"
    ends = dt.datetime.fromisoformat(data["trialEndsAt"].replace("Z", "+00:00"))
    assert abs(ends - (dt.datetime.now(dt.UTC) + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    assert data["slug"].startswith("acme-widgets")
    members = await client.get(f"/api/v1/orgs/{data['id']}/members", headers=owner.headers)
    assert [(m["userId"], m["role"]) for m in members.json()["data"]] == [(owner.id, "owner")]


async def test_trial_length_comes_from_the_setting(build_app: object) -> None:
    from tests.conftest import client_for

    app: FastAPI = await build_app(trial_days=14, rate_limit_enabled=False)  # type: ignore[operator]
    async with client_for(app) as http:
        owner = await register(http)
        org = await create_org(http, owner)
        data = (await http.get(f"/api/v1/orgs/{org.id}", headers=owner.headers)).json()["data"]
    ends = dt.datetime.fromisoformat(data["trialEndsAt"].replace("Z", "+00:00"))
    assert abs(ends - (dt.datetime.now(dt.UTC) + dt.timedelta(days=14))) < dt.timedelta(minutes=1)


async def test_explicit_taken_slug_is_409_derived_slug_is_made_unique(
    client: httpx.AsyncClient,
) -> None:
    owner = await register(client)
    slug = f"team-{uuid.uuid4().hex[:8]}"
    first = await create_org(client, owner, name=slug, slug=slug)
    assert first.slug == slug
    taken = await client.post(
        "/api/v1/orgs", json={"name": "x", "slug": slug}, headers=owner.headers
    )
    assert taken.status_code == 409
    derived = await create_org(client, owner, name=slug)
    assert derived.slug != slug
    assert derived.slug.startswith(slug)


async def test_invalid_slugs_are_400(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    for slug in ("ab", "Upper-Case", "under_score", "x" * 51):
        response = await client.post(
            "/api/v1/orgs", json={"name": "n", "slug": slug}, headers=owner.headers
        )
        assert response.status_code == 400, slug


async def test_create_needs_authentication_and_rejects_unknown_fields(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/api/v1/orgs", json={"name": "n"})).status_code == 401
    owner = await register(client)
    response = await client.post(
        "/api/v1/orgs", json={"name": "n", "plan": "enterprise"}, headers=owner.headers
    )
    assert response.status_code == 400


async def test_list_mine_shows_my_role_in_each_and_nothing_else(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    me = await register(client)
    mine = await create_org(client, me)
    other = await create_org(client, await register(client))
    await add_member(app, client, other, "viewer", account=me)
    await create_org(client, await register(client))  # not mine
    response = await client.get("/api/v1/orgs?limit=100", headers=me.headers)
    roles = {o["id"]: o["myRole"] for o in response.json()["data"]}
    assert roles == {mine.id: "owner", other.id: "viewer"}
    assert response.json()["meta"]["total"] == 2


async def test_update_changes_name_and_slug(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    slug = f"renamed-{uuid.uuid4().hex[:8]}"
    response = await client.patch(
        org.path, json={"name": "Renamed", "slug": slug}, headers=owner.headers
    )
    assert response.status_code == 200
    assert (response.json()["data"]["name"], response.json()["data"]["slug"]) == ("Renamed", slug)


async def test_soft_deleted_organization_answers_404_everywhere(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    assert (await client.delete(org.path, headers=owner.headers)).status_code == 204
    deleted = await client.get(org.path, headers=owner.headers)
    missing = await client.get(f"/api/v1/orgs/{uuid.uuid4()}", headers=owner.headers)
    assert deleted.status_code == missing.status_code == 404
    assert deleted.json()["message"] == missing.json()["message"]
    assert (await client.get(f"{org.path}/members", headers=owner.headers)).status_code == 404
    listed = await client.get("/api/v1/orgs?limit=100", headers=owner.headers)
    assert org.id not in {o["id"] for o in listed.json()["data"]}


async def test_only_the_owner_deletes(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    admin = await add_member(app, client, org, "admin")
    assert (await client.delete(org.path, headers=admin.headers)).status_code == 403
    assert (await client.get(org.path, headers=owner.headers)).status_code == 200


async def test_roles_table_is_served(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    response = await client.get("/api/v1/roles", headers=owner.headers)
    table = {row["role"]: row["permissions"] for row in response.json()["data"]}
    assert set(table) == {"owner", "admin", "manager", "member", "viewer", "billing"}
    assert "tasks:delete:own" in table["member"]
    assert "org:delete" not in table["admin"]


async def test_search_takes_percent_and_underscore_literally(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    plain = await create_org(client, owner, name="Plain Company")
    percent = await create_org(client, owner, name="100% Company")
    found = await client.get("/api/v1/orgs", params={"search": "%"}, headers=owner.headers)
    assert [o["id"] for o in found.json()["data"]] == [str(percent.id)]
    underscore = await client.get("/api/v1/orgs", params={"search": "_"}, headers=owner.headers)
    assert underscore.json()["data"] == []
    members = await client.get(
        f"/api/v1/orgs/{plain.id}/members", params={"search": "%"}, headers=owner.headers
    )
    assert members.json()["data"] == []
