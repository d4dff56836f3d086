"""Exports over HTTP: 202 + job, the worker builds one JSON file of exactly this organization."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import event, update
from sqlalchemy.engine import Engine

from tenantry.core.db import utcnow
from tenantry.core.jobs import Worker
from tenantry.core.jobs.models import Job
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.exports import document
from tenantry.modules.exports.service import JOB_TYPE
from tenantry.modules.tasks.models import Task
from tests.factories import Org, add_member, create_org, register

PNG = b"\x89PNG\r\n\x1a\n" + b"export" * 20


async def _project(client: httpx.AsyncClient, org: Org, name: str) -> str:
    response = await client.post(
        f"{org.path}/projects", json={"name": name}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _task(client: httpx.AsyncClient, org: Org, project: str, title: str) -> str:
    response = await client.post(
        f"{org.path}/projects/{project}/tasks", json={"title": title}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _file(client: httpx.AsyncClient, org: Org) -> str:
    response = await client.post(
        f"{org.path}/files",
        files={"file": ("pic.png", PNG, "image/png")},
        headers=org.owner.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _run_jobs(app: FastAPI) -> None:
    worker = Worker(app.state.database, app.state.settings, job_types={JOB_TYPE})
    await worker.drain(within_seconds=60)


async def _export(app: FastAPI, client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    """Start an export, run it, and return the finished job."""
    response = await client.post(f"{org.path}/exports", json={}, headers=org.owner.headers)
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]
    assert accepted["status"] == "queued"
    await _run_jobs(app)
    job = await client.get(f"{org.path}/jobs/{accepted['jobId']}", headers=org.owner.headers)
    data: dict[str, Any] = job.json()["data"]
    return data


async def _download(client: httpx.AsyncClient, org: Org, file_id: str) -> dict[str, Any]:
    response = await client.get(f"{org.path}/files/{file_id}/download", headers=org.owner.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    exported: dict[str, Any] = orjson.loads(response.content)
    return exported


async def test_export_holds_exactly_this_organizations_data_and_is_downloadable(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    other = await create_org(client, await register(client))
    member = await add_member(app, client, org, "member")
    project = await _project(client, org, "Exported")
    tasks = {await _task(client, org, project, f"t{i}") for i in range(3)}
    picture = await _file(client, org)
    other_project = await _project(client, other, "Not mine")
    other_task = await _task(client, other, other_project, "not mine")
    other_file = await _file(client, other)

    job = await _export(app, client, org)

    assert (job["type"], job["status"], job["progress"]) == (JOB_TYPE, "succeeded", 100)
    exported = await _download(client, org, job["result"]["fileId"])
    assert exported["organization"]["id"] == org.id
    assert {p["id"] for p in exported["projects"]} == {project}
    assert {t["id"] for t in exported["tasks"]} == tasks
    assert {m["userId"] for m in exported["members"]} == {org.owner.id, member.id}
    assert {f["id"] for f in exported["files"]} == {picture}
    text = orjson.dumps(exported).decode()
    for foreign in (other.id, other_project, other_task, other_file, other.owner.email):
        assert foreign not in text
    # The export is a file of the organization like any other, and of no other organization.
    listed = await client.get(f"{org.path}/files", headers=org.owner.headers)
    assert job["result"]["fileId"] in {f["id"] for f in listed.json()["data"]}
    foreign = await client.get(
        f"{other.path}/files/{job['result']['fileId']}/download", headers=other.owner.headers
    )
    assert foreign.status_code == 404


async def test_soft_deleted_rows_are_left_out_of_the_export(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    kept = await _project(client, org, "kept")
    binned = await _project(client, org, "binned")
    kept_task = await _task(client, org, kept, "kept")
    await _task(client, org, binned, "hidden with its project")
    deleted = await client.delete(f"{org.path}/projects/{binned}", headers=org.owner.headers)
    assert deleted.status_code == 204

    exported = await _download(client, org, (await _export(app, client, org))["result"]["fileId"])

    assert [p["id"] for p in exported["projects"]] == [kept]
    assert [t["id"] for t in exported["tasks"]] == [kept_task]


async def test_only_roles_with_exports_create_may_start_an_export(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    for role, expected in (("viewer", 403), ("member", 403), ("manager", 202), ("admin", 202)):
        account = await add_member(app, client, org, role)
        response = await client.post(f"{org.path}/exports", json={}, headers=account.headers)
        assert response.status_code == expected, (role, response.text)
    outsider = await register(client)
    response = await client.post(f"{org.path}/exports", json={}, headers=outsider.headers)
    assert response.status_code in (403, 404)


async def test_unknown_format_or_field_is_refused_and_queues_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    for body in ({"format": "csv"}, {"organizationId": str(uuid.uuid4())}):
        response = await client.post(f"{org.path}/exports", json=body, headers=org.owner.headers)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "validation_error"
    jobs = await client.get(f"{org.path}/jobs", headers=org.owner.headers)
    assert jobs.json()["data"] == []
    accepted = await client.post(
        f"{org.path}/exports", json={"format": "json"}, headers=org.owner.headers
    )
    assert accepted.status_code == 202


async def test_a_rerun_of_the_same_job_does_not_create_a_second_file(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    await _project(client, org, "once")
    job = await _export(app, client, org)
    # The job is delivered again (at-least-once): it must find its file, not make another.
    async with app.state.database.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job["id"]))
            .values(status="queued", run_at=utcnow(), finished_at=None, progress=0)
        )
    await _run_jobs(app)

    again = await client.get(f"{org.path}/jobs/{job['id']}", headers=org.owner.headers)
    assert again.json()["data"]["status"] == "succeeded"
    assert again.json()["data"]["result"]["fileId"] == job["result"]["fileId"]
    files = await client.get(f"{org.path}/files", headers=org.owner.headers)
    assert [f["id"] for f in files.json()["data"]] == [job["result"]["fileId"]]


@contextmanager
def _task_batches(app: FastAPI) -> Iterator[list[Any]]:
    """The parameters of every keyset batch query on tasks run meanwhile, on any engine (in
    database mode the tasks are in the organization's database, not the control one)."""
    seen: list[Any] = []
    engine = Engine

    def listen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "ORDER BY tasks.id" in statement:
            seen.append(params)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


async def test_a_large_organization_is_exported_in_bounded_batches(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    project = uuid.UUID(await _project(client, org, "big"))
    count = 2 * document.BATCH_SIZE + 500
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext.system(uuid.UUID(org.id)))
        session.add_all(
            Task(project_id=project, title=f"bulk {i}", organization_id=uuid.UUID(org.id))
            for i in range(count)
        )

    with _task_batches(app) as batches:
        job = await _export(app, client, org)

    assert job["status"] == "succeeded", job
    assert job["result"]["rows"]["tasks"] == count
    # Three keyset queries of at most BATCH_SIZE rows each: never all tasks at once.
    assert len(batches) == 3
    exported = await _download(client, org, job["result"]["fileId"])
    ids = [t["id"] for t in exported["tasks"]]
    assert len(ids) == len(set(ids)) == count
