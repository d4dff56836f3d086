"""Row-level security on PostgreSQL: the database refuses cross-tenant access by itself.

The application role (`DATABASE_APP_ROLE=tenantry_app`, created by revision 0004) is
used with SQL that bypasses the ORM criteria on purpose (text and Core table statements):
only the policies of `core/rls.py` stand between one organization and another's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, String, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tenantry.config import Settings
from tenantry.core.db import NAMING_CONVENTION, Base, Database, TenantOwned, UUIDPrimaryKey
from tenantry.core.rls import APP_ROLE, enable_rls
from tenantry.core.tenancy import TenantContext, bind_tenant
from tests.conftest import NO_RLS

pytestmark = [pytest.mark.services, pytest.mark.postgresql_only(NO_RLS)]


class RlsProbeBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = Base.type_annotation_map


class Secret(RlsProbeBase, UUIDPrimaryKey, TenantOwned):
    __tablename__ = "probe_rls_secrets"

    body: Mapped[str] = mapped_column(String(100))


SECRETS = Secret.__table__
RAW_BODIES = text("SELECT body FROM probe_rls_secrets WHERE body LIKE :run")


@pytest.fixture(scope="module")
async def owner_db(settings: Settings) -> AsyncIterator[Database]:
    """Connected as the migrating superuser: RLS does not apply to it."""
    database = Database(settings)

    def create(connection: Any) -> None:
        RlsProbeBase.metadata.create_all(connection)
        enable_rls(Operations(MigrationContext.configure(connection)), Secret.__tablename__)

    async with database.engine.begin() as conn:
        await conn.run_sync(create)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def app_db(
    owner_db: Database, make_settings: Callable[..., Settings]
) -> AsyncIterator[Database]:
    """Connected the way the application runs: as the role the policies apply to."""
    database = Database(make_settings(database_app_role=APP_ROLE))
    yield database
    await database.dispose()


async def seed(app_db: Database) -> tuple[str, TenantContext, TenantContext]:
    """One secret for each of two organizations, written through the ORM as the app role."""
    run = uuid.uuid4().hex[:8]
    a = TenantContext(organization_id=uuid.uuid4())
    b = TenantContext(organization_id=uuid.uuid4())
    for name, ctx in (("a", a), ("b", b)):
        async with app_db.transaction() as session:
            bind_tenant(session, ctx)
            session.add(Secret(body=f"{run}-{name}"))
    return run, a, b


async def raw_bodies(database: Database, run: str, ctx: TenantContext | None) -> set[str]:
    async with database.session(write=False) as session:
        if ctx is not None:
            bind_tenant(session, ctx)
        rows = await session.scalars(RAW_BODIES, {"run": f"{run}-%"})
        return set(rows)


async def test_the_application_role_cannot_bypass_rls(app_db: Database) -> None:
    async with app_db.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles "
                    "WHERE rolname = current_user"
                )
            )
        ).one()
        await conn.execute(text("RESET ROLE"))
        after_reset = await conn.scalar(text("SELECT current_user"))
    assert tuple(row) == (APP_ROLE, False, False)
    assert after_reset == APP_ROLE


async def test_sql_without_orm_criteria_reads_only_the_bound_organization(
    owner_db: Database, app_db: Database
) -> None:
    run, a, b = await seed(app_db)
    assert await raw_bodies(owner_db, run, None) == {f"{run}-a", f"{run}-b"}  # both exist
    assert await raw_bodies(app_db, run, a) == {f"{run}-a"}
    assert await raw_bodies(app_db, run, b) == {f"{run}-b"}
    async with app_db.session(write=False) as session:
        bind_tenant(session, a)
        core_rows = await session.execute(
            select(SECRETS.c.body).where(SECRETS.c.body.like(f"{run}-%"))
        )
        assert {row.body for row in core_rows} == {f"{run}-a"}


async def test_an_unbound_transaction_sees_no_tenant_rows(app_db: Database) -> None:
    run, a, _b = await seed(app_db)
    for _ in range(3):  # the pooled connection served a bound transaction just before
        assert await raw_bodies(app_db, run, a) == {f"{run}-a"}
        assert await raw_bodies(app_db, run, None) == set()


async def test_sql_without_orm_criteria_cannot_write_another_organizations_rows(
    owner_db: Database, app_db: Database
) -> None:
    run, a, b = await seed(app_db)
    async with app_db.transaction() as session:
        bind_tenant(session, a)
        params = {"org": b.organization_id, "run": f"{run}-%"}
        updated = await session.execute(
            text("UPDATE probe_rls_secrets SET body = 'stolen' WHERE organization_id = :org"),
            params,
        )
        deleted = await session.execute(
            text("DELETE FROM probe_rls_secrets WHERE organization_id = :org"), params
        )
        assert (updated.rowcount, deleted.rowcount) == (0, 0)  # type: ignore[attr-defined]
    with pytest.raises(DBAPIError, match="row-level security"):
        await insert_raw(app_db, a, b.organization_id)
    assert await raw_bodies(owner_db, run, None) == {f"{run}-a", f"{run}-b"}


async def insert_raw(database: Database, ctx: TenantContext, org: uuid.UUID) -> None:
    async with database.transaction() as session:
        bind_tenant(session, ctx)
        await session.execute(
            text(
                "INSERT INTO probe_rls_secrets (id, organization_id, body) VALUES (:id, :org, 'x')"
            ),
            {"id": uuid.uuid4(), "org": org},
        )


async def test_binding_after_the_transaction_began_reaches_the_database(app_db: Database) -> None:
    run, a, _b = await seed(app_db)
    async with app_db.session(write=False) as session:
        await session.execute(text("SELECT 1"))  # e.g. the membership lookup, before binding
        bind_tenant(session, a)
        rows = await session.scalars(RAW_BODIES, {"run": f"{run}-%"})
        assert set(rows) == {f"{run}-a"}


async def test_all_tenants_bypasses_rls_for_that_statement_only(app_db: Database) -> None:
    run, a, _b = await seed(app_db)
    async with app_db.session(write=False) as session:
        bind_tenant(session, a)
        everyone = await session.scalars(
            select(Secret.body)
            .where(Secret.body.like(f"{run}-%"))
            .execution_options(all_tenants=True)
        )
        assert set(everyone) == {f"{run}-a", f"{run}-b"}
        after = await session.scalars(RAW_BODIES, {"run": f"{run}-%"})
        assert set(after) == {f"{run}-a"}
