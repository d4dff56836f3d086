"""Across two databases: a tenant change, its audit entry and the job it enqueues commit
together (tenant database: the row, the entry, the outbox job) or not at all; the job
reaches the control queue after commit, once, even after a crash before the relay."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select, text

from tenantry.core.db import Database
from tenantry.core.jobs import JobContext, Worker, enqueue, get_handler, job_handler, unit_of_work
from tenantry.core.jobs.models import Job
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.core.tenantdb import tenant_bind
from tenantry.modules.audit.service import record
from tenantry.modules.projects.models import Project
from tenantry.modules.tenants.service import TenantDatabases
from tests.conftest import client_for
from tests.factories import TEST_JOB_TYPE, _register_test_job, create_org, register


class Boom(Exception):
    pass


async def _org(app: FastAPI) -> tuple[uuid.UUID, uuid.UUID]:
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
    return uuid.UUID(org.id), uuid.UUID(org.owner.id)


async def _count(engine: Any, table: str, where: str, value: Any) -> int:
    async with engine.connect() as connection:
        key = (
            value.hex if engine.dialect.name == "sqlite" and isinstance(value, uuid.UUID) else value
        )
        sql = text(f"SELECT count(*) FROM {table} WHERE {where} = :v")
        return int(await connection.scalar(sql, {"v": key}) or 0)


async def _change_with_job(
    database: Database, org: uuid.UUID, user: uuid.UUID, name: str
) -> uuid.UUID:
    """A project, its audit entry and a job, in one unit of work; the job's id."""
    _register_test_job()
    async with unit_of_work(database) as session:
        bind_tenant(session, TenantContext(organization_id=org, user_id=user))
        project = Project(name=name)
        session.add(project)
        await session.flush()
        await record(session, "project.created", "project", project.id)
        job = await enqueue(
            session, TEST_JOB_TYPE, {"project": str(project.id)}, organization_id=org
        )
        # The job row is written in the tenant database's transaction, with the change:
        tenant = await tenant_bind(session)
        count = select(func.count()).select_from(Job).where(Job.id == job.id)
        assert await session.scalar(count, bind_arguments={"bind": tenant}) == 1
        control = session.sync_session.bind
        assert await session.scalar(count, bind_arguments={"bind": control}) == 0
        if name == "rolled back":
            raise Boom()
        return job.id


async def test_a_rolled_back_change_leaves_no_row_no_audit_entry_and_no_job(
    tenant_app: FastAPI,
) -> None:
    database: Database = tenant_app.state.database
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    org, user = await _org(tenant_app)
    tenant = await tenants.routing.engine_of(org)
    with pytest.raises(Boom):
        await _change_with_job(database, org, user, "rolled back")
    for engine in (tenant, database.engine):
        assert await _count(engine, "projects", "name", "rolled back") == 0
        assert await _count(engine, "audit_logs", "action", "project.created") == 0
        assert await _count(engine, "jobs", "type", TEST_JOB_TYPE) == 0


async def test_a_committed_change_has_its_entry_in_the_tenant_database_and_its_job_queued(
    tenant_app: FastAPI,
) -> None:
    database: Database = tenant_app.state.database
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    org, user = await _org(tenant_app)
    tenant = await tenants.routing.engine_of(org)
    job_id = await _change_with_job(database, org, user, "kept")
    assert await _count(tenant, "projects", "name", "kept") == 1
    assert await _count(tenant, "audit_logs", "action", "project.created") == 1
    assert await _count(database.engine, "audit_logs", "action", "project.created") == 0
    # Relayed after the commit: in the control queue, no longer in the outbox.
    assert await _count(database.engine, "jobs", "id", job_id) == 1
    assert await _count(tenant, "jobs", "id", job_id) == 0


async def test_a_job_left_in_the_outbox_by_a_crash_is_relayed_once(tenant_app: FastAPI) -> None:
    """A crash after the commit and before the relay (no after-commit callback ran), and
    one between the relay's copy and its delete: the next relay delivers exactly once."""
    database: Database = tenant_app.state.database
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    org, user = await _org(tenant_app)
    tenant = await tenants.routing.engine_of(org)
    _register_test_job()
    session = database.session()
    try:
        bind_tenant(session, TenantContext(organization_id=org, user_id=user))
        session.add(Project(name="crashed"))
        await session.flush()
        job = await enqueue(session, TEST_JOB_TYPE, {}, organization_id=org)
        await session.commit()  # committed; the process "dies" before its callbacks run
    finally:
        await session.close()
    assert await _count(tenant, "jobs", "id", job.id) == 1
    assert await _count(database.engine, "jobs", "id", job.id) == 0
    # The relay copied the row and died before deleting it from the outbox:
    jobs = Job.__table__
    async with tenant.connect() as connection:
        row = (await connection.execute(select(jobs).where(jobs.c.id == job.id))).mappings().one()
    async with database.engine.begin() as connection:
        await connection.execute(insert(jobs), [dict(row)])
    assert await tenants.routing.relay_all() >= 1
    assert await _count(database.engine, "jobs", "id", job.id) == 1
    assert await _count(tenant, "jobs", "id", job.id) == 0
    assert await tenants.routing.relay_outbox(org) == []  # nothing left, nothing twice


async def test_a_job_of_a_control_change_is_queued_in_the_control_database(
    tenant_app: FastAPI,
) -> None:
    """No tenant rows written: the job rides in the control transaction, as in shared mode."""
    database: Database = tenant_app.state.database
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    org, user = await _org(tenant_app)
    tenant = await tenants.routing.engine_of(org)
    _register_test_job()
    async with unit_of_work(database) as session:
        bind_tenant(session, TenantContext(organization_id=org, user_id=user))
        job = await enqueue(session, TEST_JOB_TYPE, {}, organization_id=org)
    assert await _count(database.engine, "jobs", "id", job.id) == 1
    assert await _count(tenant, "jobs", "id", job.id) == 0


MAKE_PROJECT = "test.tenantdb.make_project"


def _register_make_project() -> None:
    if get_handler(MAKE_PROJECT) is None:

        @job_handler(MAKE_PROJECT)
        async def make_project(ctx: JobContext) -> dict[str, Any]:
            ctx.session.add(Project(name=str(ctx.payload["name"])))
            await ctx.session.flush()
            return {}


async def test_a_job_of_an_organization_writes_to_its_database(tenant_app: FastAPI) -> None:
    """Job attempts are bound to their organization (`open_job_session`): same routing."""
    database: Database = tenant_app.state.database
    tenants: TenantDatabases = tenant_app.state.services.tenant_databases
    org, user = await _org(tenant_app)
    tenant = await tenants.routing.engine_of(org)
    _register_make_project()
    name = f"from a job {uuid.uuid4().hex[:6]}"
    async with unit_of_work(database) as session:
        await enqueue(session, MAKE_PROJECT, {"name": name}, organization_id=org, created_by=user)
    worker = Worker(database, tenant_app.state.settings, job_types={MAKE_PROJECT})
    await worker.drain(within_seconds=60)
    assert await _count(tenant, "projects", "name", name) == 1
    assert await _count(database.engine, "projects", "name", name) == 0
