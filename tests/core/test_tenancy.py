"""Automatic tenant scoping of ORM statements and writes (core/tenancy.py), on both dialects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.tenancy import (
    TenantContext,
    TenantScopeError,
    bind_tenant,
    require_tenant,
    tenant_of,
    unbind_tenant,
)
from tests.core.tenancy_probe import Label, Note, Notebook, TenancyProbeBase


@pytest.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    async with database.engine.begin() as conn:
        await conn.run_sync(TenancyProbeBase.metadata.create_all)
    yield database
    await database.dispose()


def org() -> TenantContext:
    return TenantContext(organization_id=uuid.uuid4(), user_id=uuid.uuid4(), role="member")


async def add_notebook(db: Database, ctx: TenantContext, title: str, **fields: object) -> Notebook:
    async with db.transaction() as session:
        bind_tenant(session, ctx)
        notebook = Notebook(title=title, **fields)
        session.add(notebook)
    return notebook


async def write(
    db: Database, ctx: TenantContext | None, work: Callable[[AsyncSession], Awaitable[object]]
) -> None:
    """Run `work` in a transaction (bound to `ctx` when given) and flush."""
    async with db.transaction() as session:
        if ctx is not None:
            bind_tenant(session, ctx)
        await work(session)
        await session.flush()


async def titles(db: Database, ctx: TenantContext, **options: object) -> set[str]:
    async with db.session(write=False) as session:
        bind_tenant(session, ctx)
        rows = await session.scalars(select(Notebook).execution_options(**options))
        return {row.title for row in rows}


async def test_select_sees_only_the_bound_organizations_rows(db: Database) -> None:
    a, b = org(), org()
    await add_notebook(db, a, "a-1")
    await add_notebook(db, a, "a-2")
    await add_notebook(db, b, "b-1")
    assert await titles(db, a) == {"a-1", "a-2"}
    assert await titles(db, b) == {"b-1"}


async def test_get_by_id_of_another_organizations_row_finds_nothing(db: Database) -> None:
    a, b = org(), org()
    theirs = await add_notebook(db, b, "b-secret")
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        assert await session.get(Notebook, theirs.id) is None
        found = await session.scalar(select(Notebook).where(Notebook.id == theirs.id))
        assert found is None


async def test_bulk_update_changes_only_the_bound_organizations_rows(db: Database) -> None:
    a, b = org(), org()
    mine = await add_notebook(db, a, "same-title")
    theirs = await add_notebook(db, b, "same-title")
    async with db.transaction() as session:
        bind_tenant(session, a)
        result = await session.execute(
            update(Notebook)
            .where(Notebook.id.in_([mine.id, theirs.id]))
            .values(title="renamed")
            .execution_options(synchronize_session=False)
        )
        assert result.rowcount == 1  # type: ignore[attr-defined]
    assert await titles(db, a) == {"renamed"}
    assert await titles(db, b) == {"same-title"}


async def test_bulk_delete_removes_only_the_bound_organizations_rows(db: Database) -> None:
    a, b = org(), org()
    for ctx in (a, b):
        async with db.transaction() as session:
            bind_tenant(session, ctx)
            session.add(Label(name="doomed"))
    async with db.transaction() as session:
        bind_tenant(session, a)
        await session.execute(delete(Label).execution_options(synchronize_session=False))
    for ctx, expected in ((a, 0), (b, 1)):
        async with db.session(write=False) as session:
            bind_tenant(session, ctx)
            assert await session.scalar(select(func.count()).select_from(Label)) == expected


async def test_bulk_update_with_session_synchronization_is_scoped(db: Database) -> None:
    a, b = org(), org()
    marker = f"sync-{uuid.uuid4().hex[:8]}"
    await add_notebook(db, a, marker)
    await add_notebook(db, b, marker)
    async with db.transaction() as session:
        bind_tenant(session, a)
        for strategy in ("auto", "fetch", "evaluate"):
            await session.execute(
                update(Notebook)
                .where(Notebook.title.startswith(marker))
                .values(title=f"{marker}-{strategy}")
                .execution_options(synchronize_session=strategy)
            )
    assert await titles(db, a) == {f"{marker}-evaluate"}
    assert await titles(db, b) == {marker}


async def test_subqueries_are_scoped(db: Database) -> None:
    a, notebook = await notebook_with_foreign_notes(db)
    notes = select(func.count(Note.id)).where(Note.notebook_id == Notebook.id)
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        row = (
            await session.execute(
                select(Notebook.title, notes.scalar_subquery()).where(Notebook.id == notebook.id)
            )
        ).one()
        assert tuple(row) == ("with-notes", 1)  # not the trashed note, not B's


async def test_soft_deleted_rows_are_hidden_unless_include_deleted(db: Database) -> None:
    a = org()
    await add_notebook(db, a, "alive")
    await add_notebook(db, a, "trashed", deleted_at=utcnow())
    assert await titles(db, a) == {"alive"}
    assert await titles(db, a, include_deleted=True) == {"alive", "trashed"}


async def test_soft_delete_then_restore_through_include_deleted(db: Database) -> None:
    a = org()
    notebook = await add_notebook(db, a, "restorable")
    async with db.transaction() as session:
        bind_tenant(session, a)
        row = await session.get(Notebook, notebook.id)
        assert row is not None
        row.deleted_at = utcnow()
    assert await titles(db, a) == set()
    async with db.transaction() as session:
        bind_tenant(session, a)
        trashed = await session.scalar(
            select(Notebook)
            .where(Notebook.id == notebook.id)
            .execution_options(include_deleted=True)
        )
        assert trashed is not None
        trashed.deleted_at = None
    assert await titles(db, a) == {"restorable"}


async def test_insert_is_stamped_with_organization_and_author(db: Database) -> None:
    a = org()
    notebook = await add_notebook(db, a, "stamped")
    assert notebook.organization_id == a.organization_id
    assert notebook.created_by == a.user_id
    assert notebook.updated_by == a.user_id


async def test_update_is_stamped_with_the_editor(db: Database) -> None:
    a = org()
    editor = TenantContext(organization_id=a.organization_id, user_id=uuid.uuid4())
    notebook = await add_notebook(db, a, "before")
    async with db.transaction() as session:
        bind_tenant(session, editor)
        row = await session.get(Notebook, notebook.id)
        assert row is not None
        row.title = "after"
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        row = await session.get(Notebook, notebook.id)
        assert row is not None
        assert (row.title, row.created_by, row.updated_by) == ("after", a.user_id, editor.user_id)


async def test_write_without_a_context_raises_and_saves_nothing(db: Database) -> None:
    title = f"orphan-{uuid.uuid4().hex[:8]}"

    async def work(session: AsyncSession) -> None:
        session.add(Notebook(title=title, organization_id=uuid.uuid4()))

    with pytest.raises(TenantScopeError):
        await write(db, None, work)
    async with db.session(write=False) as session:
        rows = await session.scalars(
            select(Notebook).where(Notebook.title == title).execution_options(all_tenants=True)
        )
        assert list(rows) == []


async def test_read_without_a_context_raises(db: Database) -> None:
    async with db.session(write=False) as session:
        assert tenant_of(session) is None
        with pytest.raises(TenantScopeError):
            await session.execute(select(Notebook))
        with pytest.raises(TenantScopeError):
            await session.execute(select(Note.body).join(Note.notebook))
        with pytest.raises(TenantScopeError):
            require_tenant(session)


async def test_insert_for_another_organization_raises(db: Database) -> None:
    a, b = org(), org()

    async def work(session: AsyncSession) -> None:
        session.add(Notebook(title="smuggled", organization_id=b.organization_id))

    with pytest.raises(TenantScopeError):
        await write(db, a, work)


async def test_moving_a_row_to_another_organization_raises(db: Database) -> None:
    a, b = org(), org()
    notebook = await add_notebook(db, a, "stays-home")

    async def work(session: AsyncSession) -> None:
        row = await session.get(Notebook, notebook.id)
        assert row is not None
        row.organization_id = b.organization_id

    with pytest.raises(TenantScopeError):
        await write(db, a, work)
    assert await titles(db, a) == {"stays-home"}


async def test_deleting_another_organizations_row_raises(db: Database) -> None:
    a, b = org(), org()
    theirs = await add_notebook(db, b, "not-yours")

    async def work(session: AsyncSession) -> None:
        stolen = await session.scalar(
            select(Notebook).where(Notebook.id == theirs.id).execution_options(all_tenants=True)
        )
        await session.delete(stolen)

    with pytest.raises(TenantScopeError):
        await write(db, a, work)
    assert await titles(db, b) == {"not-yours"}


async def test_rows_loaded_before_binding_are_not_served_from_the_identity_map(
    db: Database,
) -> None:
    a, b = org(), org()
    mine = await add_notebook(db, a, "mine")
    theirs = await add_notebook(db, b, "theirs")
    async with db.session(write=False) as session:
        loaded = await session.scalars(
            select(Notebook)
            .where(Notebook.id.in_([mine.id, theirs.id]))
            .execution_options(all_tenants=True)
        )
        assert len(list(loaded)) == 2
        bind_tenant(session, a)
        assert await session.get(Notebook, theirs.id) is None
        found = await session.get(Notebook, mine.id)
        assert found is not None
        assert found.title == "mine"


async def test_binding_a_session_to_a_second_organization_raises(db: Database) -> None:
    a, b = org(), org()
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        bind_tenant(session, TenantContext(organization_id=a.organization_id, role="admin"))
        with pytest.raises(TenantScopeError):
            bind_tenant(session, b)
        assert require_tenant(session).role == "admin"
        unbind_tenant(session)
        with pytest.raises(TenantScopeError):
            await session.execute(select(Notebook))


async def test_all_tenants_escape_hatch_reads_every_organization(db: Database) -> None:
    a, b = org(), org()
    marker = f"hatch-{uuid.uuid4().hex[:8]}"
    await add_notebook(db, a, marker)
    await add_notebook(db, b, marker)
    await add_notebook(db, b, marker, deleted_at=utcnow())
    async with db.session(write=False) as session:
        query = select(Notebook.organization_id).where(Notebook.title == marker)
        everyone = await session.scalars(query.execution_options(all_tenants=True))
        assert sorted(map(str, everyone)) == sorted(
            [str(a.organization_id), str(b.organization_id)]
        )
        with_trash = await session.scalars(
            query.execution_options(all_tenants=True, include_deleted=True)
        )
        assert len(list(with_trash)) == 3


async def notebook_with_foreign_notes(db: Database) -> tuple[TenantContext, Notebook]:
    """A's notebook with A's notes (one soft-deleted) and a note B planted on it."""
    a, b = org(), org()
    notebook = await add_notebook(db, a, "with-notes")
    async with db.transaction() as session:
        bind_tenant(session, a)
        session.add(Note(notebook_id=notebook.id, body="a-visible"))
        session.add(Note(notebook_id=notebook.id, body="a-trashed", deleted_at=utcnow()))
    async with db.transaction() as session:
        bind_tenant(session, b)
        session.add(Note(notebook_id=notebook.id, body="b-planted"))
    return a, notebook


async def test_eager_loaded_relationships_are_scoped(db: Database) -> None:
    a, notebook = await notebook_with_foreign_notes(db)
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        row = await session.scalar(
            select(Notebook).where(Notebook.id == notebook.id).options(selectinload(Notebook.notes))
        )
        assert row is not None
        assert [note.body for note in row.notes] == ["a-visible"]


async def test_lazy_loaded_relationships_are_scoped(db: Database) -> None:
    a, notebook = await notebook_with_foreign_notes(db)
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        row = await session.get(Notebook, notebook.id)
        assert row is not None
        bodies = await session.run_sync(lambda _sync: [note.body for note in row.notes])
        assert bodies == ["a-visible"]


async def test_lazy_load_of_a_row_loaded_unscoped_gets_the_bound_criteria(db: Database) -> None:
    a, notebook = await notebook_with_foreign_notes(db)
    async with db.session(write=False) as session:
        row = await session.scalar(
            select(Notebook).where(Notebook.id == notebook.id).execution_options(all_tenants=True)
        )
        assert row is not None
        bind_tenant(session, a)
        bodies = await session.run_sync(lambda _sync: [note.body for note in row.notes])
        assert bodies == ["a-visible"]


async def test_joined_entities_are_scoped(db: Database) -> None:
    a, notebook = await notebook_with_foreign_notes(db)
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        bodies = await session.scalars(
            select(Note.body).join(Note.notebook).where(Notebook.id == notebook.id)
        )
        assert list(bodies) == ["a-visible"]


async def test_bulk_insert_rows_are_stamped_and_checked(db: Database) -> None:
    a, b = org(), org()
    async with db.transaction() as session:
        bind_tenant(session, a)
        await session.execute(insert(Label), [{"name": "bulk-1"}, {"name": "bulk-2"}])
    async with db.session(write=False) as session:
        bind_tenant(session, a)
        names = await session.scalars(select(Label.name))
        assert sorted(names) == ["bulk-1", "bulk-2"]
    foreign_row = [{"name": "x", "organization_id": b.organization_id}]
    with pytest.raises(TenantScopeError):
        await write(db, a, lambda session: session.execute(insert(Label), foreign_row))
    inline = insert(Label).values(name="x", organization_id=a.organization_id)
    with pytest.raises(TenantScopeError):
        await write(db, a, lambda session: session.execute(inline))


async def test_sequential_sessions_do_not_inherit_a_context(db: Database) -> None:
    a = org()
    await add_notebook(db, a, "first")
    for _ in range(3):  # the pool hands the same connection back
        async with db.session(write=False) as session:
            bind_tenant(session, a)
            assert await session.scalar(select(func.count()).select_from(Notebook)) == 1
        async with db.session(write=False) as session:
            with pytest.raises(TenantScopeError):
                await session.execute(select(Notebook))


async def test_concurrent_sessions_each_see_only_their_organization(db: Database) -> None:
    tenants = [org() for _ in range(4)]
    for index, ctx in enumerate(tenants):
        await add_notebook(db, ctx, f"concurrent-{index}")

    async def look(index: int, ctx: TenantContext) -> set[str]:
        async with db.session(write=False) as session:
            bind_tenant(session, ctx)
            await asyncio.sleep(0)  # interleave with the other tasks
            rows = await session.scalars(select(Notebook.title))
            return set(rows)

    jobs = [look(i % 4, tenants[i % 4]) for i in range(24)]
    results = await asyncio.wait_for(asyncio.gather(*jobs), timeout=30)
    for i, seen in enumerate(results):
        assert seen == {f"concurrent-{i % 4}"}


async def test_system_context_stamps_the_acting_user() -> None:
    organization_id, user_id = uuid.uuid4(), uuid.uuid4()
    ctx = TenantContext.system(organization_id, acting_user_id=user_id)
    assert (ctx.organization_id, ctx.actor_id, ctx.permissions) == (
        organization_id,
        user_id,
        frozenset(),
    )
    assert TenantContext.system(organization_id).actor_id is None
