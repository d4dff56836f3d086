"""`search=` on tasks: plain substring semantics, capped totals, the indexed path on PostgreSQL.

On PostgreSQL a term with few matches goes through `tenantry_task_search` (revision
0016, a SECURITY DEFINER function over a trigram index) and a common one through the
plain `ILIKE`; both must answer exactly what a case-insensitive substring match would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.rls import APP_ROLE
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.tasks.models import Task
from tests.conftest import NO_RLS
from tests.tenant_helpers import Org, Tenants

TITLES = (
    ("100% done", None),
    ("100 percent", None),
    ("snake_case name", None),
    ("snakeXcase name", None),
    ("Fix LOGIN page", None),
    ("fix the login", "with the Login form"),
    ("résumé d'été", None),
    ("back\\slash", None),
    ("plain", "only the description says Needle"),
)
TERMS = ("%", "100%", "_", "e_c", "login", "LOGIN", "été", "\\", "needle", "x", "zzz")


async def _search(tenants: Tenants, org: Org, term: str, **params: Any) -> dict[str, Any]:
    response = await tenants.client.get(
        org.url("/tasks"), params={"search": term, "limit": 100, **params},
        headers=org.owner.headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _add_tasks(tenants: Tenants, org: Org, titles: list[str]) -> None:
    project = await org.project()
    async with tenants.app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org.id, user_id=uuid.UUID(org.owner.id)))
        session.add_all(Task(project_id=uuid.UUID(project["id"]), title=t) for t in titles)


async def test_search_is_a_case_insensitive_substring_with_literal_wildcards(
    tenants: Tenants,
) -> None:
    org, other = await tenants.org(), await tenants.org()
    project = await org.project()
    ids = {}
    for title, description in TITLES:
        task = await org.task(project, title=title, description=description)
        ids[task["id"]] = f"{title}\n{description or ''}".lower()
    await other.task(await other.project(), title="100% login needle été")  # never shown
    for term in TERMS:
        body = await _search(tenants, org, term)
        expected = {i for i, haystack in ids.items() if term.lower() in haystack}
        assert {t["id"] for t in body["data"]} == expected, term
        assert body["meta"]["total"] == len(expected), term
        assert "totalIsEstimate" not in body["meta"]


async def test_a_search_total_beyond_the_cap_is_the_cap_and_says_so(tenants: Tenants) -> None:
    org = await tenants.org()
    cap = Settings().search_count_cap
    await _add_tasks(tenants, org, [f"common {i}" for i in range(cap + 1)])
    common = await _search(tenants, org, "common", limit=10)
    assert len(common["data"]) == 10
    assert common["meta"]["total"] == cap
    assert common["meta"]["totalIsEstimate"] is True
    assert common["meta"]["hasNextPage"] is True
    rarer = await _search(tenants, org, "common 7")  # 7, 70-79, 700-799
    assert rarer["meta"]["total"] == 111
    assert "totalIsEstimate" not in rarer["meta"]
    plain = await tenants.client.get(org.url("/tasks"), headers=org.owner.headers)
    assert plain.json()["meta"]["total"] == cap + 1  # no search: counted exactly
    assert "totalIsEstimate" not in plain.json()["meta"]


@pytest.mark.services
@pytest.mark.postgresql_only(NO_RLS)
async def test_the_search_function_returns_only_the_settings_organization(
    tenants: Tenants, make_settings: Callable[..., Settings]
) -> None:
    """Called directly as the app role, it answers for `app.org_id` and nothing else."""
    mine, theirs = await tenants.org(), await tenants.org()
    marker = uuid.uuid4().hex
    own = await mine.task(await mine.project(), title=f"{marker} mine")
    foreign = await theirs.task(await theirs.project(), title=f"{marker} theirs")
    search = text("SELECT id FROM tenantry_task_search(:p, 100)")
    pattern = {"p": f"%{marker}%"}
    database = Database(make_settings(database_app_role=APP_ROLE))
    try:
        async with database.transaction() as session:
            bind_tenant(session, TenantContext(organization_id=mine.id))
            assert [str(i) for i in await session.scalars(search, pattern)] == [own["id"]]
            await session.execute(
                text("SELECT set_config('app.org_id', :org, true)"), {"org": str(theirs.id)}
            )
            assert [str(i) for i in await session.scalars(search, pattern)] == [foreign["id"]]
            await session.execute(text("SELECT set_config('app.org_id', '', true)"))
            await session.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
            assert list(await session.scalars(search, pattern)) == []
    finally:
        await database.dispose()


@pytest.mark.services
@pytest.mark.postgresql_only("the pg_trgm GIN index; MariaDB searches a B-tree")
async def test_the_search_function_reads_the_trigram_index(tenants: Tenants) -> None:
    org = await tenants.org()
    await _add_tasks(tenants, org, [f"task {i} {uuid.uuid4().hex}" for i in range(3000)])
    async with tenants.app.state.database.transaction() as session:
        await session.execute(text("ANALYZE tasks"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        # The statement the function executes (EXECUTE ... USING: planned for the values).
        plan = await session.scalars(
            text(
                "EXPLAIN SELECT t.id FROM public.tasks AS t WHERE t.organization_id = :org"
                " AND (t.title ILIKE :p OR t.description ILIKE :p) LIMIT 1001"
            ),
            {"org": org.id, "p": "%zq9x%"},
        )
        assert "ix_tasks_search" in "\n".join(plan)
