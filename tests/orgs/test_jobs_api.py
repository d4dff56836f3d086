"""The tenant jobs API: an organization's own jobs, listed, read and cancelled."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from tests.factories import add_member, create_org, create_org_job, register


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
    cancelled = await client.post(f"{org.path}/jobs/{job_id}/cancel", headers=viewer.headers)
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
