"""The tenant jobs API: an organization's own jobs, listed, read and cancelled."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from tests.factories import (
    add_member,
    api_key_headers,
    create_api_key,
    create_org,
    create_org_job,
    register,
)


async def test_list_get_and_cancel_own_jobs(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    viewer = await add_member(app, client, org, "viewer")
    job_id = await create_org_job(app, org)
    listed = await client.get(f"{org.path}/jobs", headers=viewer.headers)
    assert [j["id"] for j in listed.json()["data"]] == [job_id]
    job = (await client.get(f"{org.path}/jobs/{job_id}", headers=viewer.headers)).json()["data"]
    assert (job["status"], job["progress"], job["attempts"]) == ("queued", 0, 0)
    assert set(job) >= {
        "type",
        "message",
        "result",
        "error",
        "createdAt",
        "startedAt",
        "finishedAt",
    }
    refused = await client.post(f"{org.path}/jobs/{job_id}/cancel", headers=viewer.headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    still = await client.get(f"{org.path}/jobs/{job_id}", headers=viewer.headers)
    assert still.json()["data"]["status"] == "queued"
    cancelled = await client.post(f"{org.path}/jobs/{job_id}/cancel", headers=org.owner.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["status"] == "cancelled"
    filtered = await client.get(
        f"{org.path}/jobs", params={"status": "queued"}, headers=viewer.headers
    )
    assert filtered.json()["data"] == []


async def test_another_organizations_job_cannot_be_cancelled(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    a = await create_org(client, await register(client))
    b = await create_org(client, await register(client))
    job_id = await create_org_job(app, a)
    response = await client.post(f"{b.path}/jobs/{job_id}/cancel", headers=b.owner.headers)
    assert response.status_code == 404
    job = await client.get(f"{a.path}/jobs/{job_id}", headers=a.owner.headers)
    assert job.json()["data"]["status"] == "queued"
    unknown = await client.get(f"{a.path}/jobs/{uuid.uuid4()}", headers=a.owner.headers)
    assert unknown.status_code == 404


async def test_cancelling_needs_jobs_cancel_or_the_permission_that_starts_the_job(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    member = await add_member(app, client, org, "member")  # jobs:read, no exports:create
    manager = await add_member(app, client, org, "manager")  # jobs:cancel
    export = await create_org_job(app, org, "exports.build")
    other = await create_org_job(app, org)
    exporter = api_key_headers(await create_api_key(client, org, ["jobs:read", "exports:create"]))

    assert (
        await client.post(f"{org.path}/jobs/{export}/cancel", headers=member.headers)
    ).status_code == 403
    assert (
        await client.post(f"{org.path}/jobs/{other}/cancel", headers=exporter)
    ).status_code == 403
    assert (await client.get(f"{org.path}/jobs/{other}", headers=org.owner.headers)).json()["data"][
        "status"
    ] == "queued"
    assert (
        await client.post(f"{org.path}/jobs/{export}/cancel", headers=exporter)
    ).status_code == 200
    assert (
        await client.post(f"{org.path}/jobs/{other}/cancel", headers=manager.headers)
    ).status_code == 200
    roles = (await client.get("/api/v1/roles", headers=member.headers)).json()["data"]
    holders = {r["role"] for r in roles if "jobs:cancel" in r["permissions"]}
    assert holders == {"owner", "admin", "manager"}
