"""Cached list totals (core/counts.py): one COUNT per organization and query until a write."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tenantry.core.counts import COUNTS, CountCache
from tests.conftest import client_for
from tests.tasks.test_task_lists import count_statements
from tests.tenant_helpers import Org, Tenants


def _counts(statements: list[str]) -> int:
    return sum("count(" in statement.lower() for statement in statements)


async def _list(tenants: Tenants, org: Org, **params: Any) -> tuple[int, int]:
    """(meta.total, COUNT statements sent) of one task list page."""
    with count_statements(tenants.app.state.database.engine) as statements:
        response = await tenants.client.get(
            org.url("/tasks"), params=params, headers=org.owner.headers
        )
    assert response.status_code == 200, response.text
    return response.json()["meta"]["total"], _counts(statements)


async def test_a_repeated_page_reuses_the_total_and_a_write_recounts_at_once(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    project = await org.project()
    for _ in range(3):
        await org.task(project)
    assert await _list(tenants, org) == (3, 1)
    assert await _list(tenants, org, page=2) == (3, 0)  # same query, another page: cached
    assert await _list(tenants, org, status="done") == (0, 1)  # another filter: its own entry
    task = await org.task(project)
    assert await _list(tenants, org) == (4, 1)  # the create invalidated: counted again
    response = await tenants.client.delete(
        org.url(f"/projects/{project['id']}/tasks/{task['id']}"), headers=org.owner.headers
    )
    assert response.status_code == 204
    assert await _list(tenants, org) == (3, 1)
    # A project's soft delete hides its tasks from the list: it invalidates too.
    response = await tenants.client.delete(
        org.url(f"/projects/{project['id']}"), headers=org.owner.headers
    )
    assert response.status_code == 204
    assert await _list(tenants, org) == (0, 1)


async def test_another_organizations_write_leaves_a_total_cached(tenants: Tenants) -> None:
    org, other = await tenants.org(), await tenants.org()
    project, elsewhere = await org.project(), await other.project()
    await org.task(project)
    assert await _list(tenants, org) == (1, 1)
    await other.task(elsewhere)
    assert await _list(tenants, org) == (1, 0)
    assert await _list(tenants, other) == (1, 1)


async def test_a_search_term_is_part_of_the_key(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project()
    await org.task(project, title="alpha one")
    await org.task(project, title="beta two")
    assert await _list(tenants, org, search="alpha") == (1, 1)
    assert await _list(tenants, org, search="beta") == (1, 1)
    assert await _list(tenants, org, search="a") == (2, 1)
    assert await _list(tenants, org, search="alpha") == (1, 0)  # a search writes nothing
    assert await _list(tenants, org) == (2, 1)
    assert await _list(tenants, org) == (2, 0)


@pytest.mark.services
async def test_a_write_through_one_process_recounts_in_another(
    tenants: Tenants, build_app: Any
) -> None:
    org = await tenants.org()
    project = await org.project()
    other = await build_app()  # a second API process sharing the database and Redis
    async with client_for(other) as second:

        async def total(http: httpx.AsyncClient) -> int:
            response = await http.get(org.url("/tasks"), headers=org.owner.headers)
            return int(response.json()["meta"]["total"])

        assert (await total(tenants.client), await total(second)) == (0, 0)
        await org.task(project)  # through the first process
        assert await total(second) == 1


def _count_cache(tenants: Tenants) -> CountCache:
    counts = tenants.app.state.database.wiring.get(COUNTS)
    assert counts is not None
    return counts


async def test_concurrent_pages_after_a_write_send_one_count(tenants: Tenants) -> None:
    """No herd: the requests missing the same total at once share one COUNT."""
    org = await tenants.org()
    project = await org.project()
    await org.task(project)
    engine = tenants.app.state.database.engine
    with count_statements(engine) as statements:
        responses = await asyncio.gather(
            *(tenants.client.get(org.url("/tasks"), headers=org.owner.headers) for _ in range(8))
        )
    assert [r.json()["meta"]["total"] for r in responses] == [1] * 8
    assert _counts(statements) == 1


async def test_one_recount_per_entry_within_a_process_and_across_processes(
    tenants: Tenants,
) -> None:
    """Concurrent misses share the first one's count; a process sharing the cache waits.

    `count` stands for the COUNT statement, held open until every caller has arrived.
    """
    counts = _count_cache(tenants)
    elsewhere = CountCache(counts._cache)  # another process: the same cache, its own flights
    org_id, started, release = uuid.uuid4(), asyncio.Event(), asyncio.Event()
    calls = 0

    async def count() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return 42

    first = asyncio.create_task(counts.total(org_id, "q", count))
    await started.wait()
    others = [asyncio.create_task(counts.total(org_id, "q", count)) for _ in range(5)]
    others.append(asyncio.create_task(elsewhere.total(org_id, "q", count)))
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(first, *others) == [42] * 7
    assert calls == 1


async def test_a_failed_recount_lets_the_waiters_count_on_their_own(tenants: Tenants) -> None:
    counts = _count_cache(tenants)
    org_id, started, release = uuid.uuid4(), asyncio.Event(), asyncio.Event()

    async def failing() -> int:
        started.set()
        await release.wait()
        raise RuntimeError("the database went away")

    async def count() -> int:
        return 7

    leader = asyncio.create_task(counts.total(org_id, "q", failing))
    await started.wait()
    waiter = asyncio.create_task(counts.total(org_id, "q", count))
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(RuntimeError):
        await leader
    assert await waiter == 7


_KEY_OF_FILTER = """
import sys
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql
from tenantry import models  # noqa: F401  (maps every model)
from tenantry.core.counts import statement_key
from tenantry.modules.tasks.models import Task
status, title = sys.argv[1], sys.argv[2]
statement = (
    select(func.count()).select_from(Task).where(Task.status == status, Task.title.contains(title))
)
print(statement_key(postgresql.dialect(), statement)[0])
"""


def _key_in_a_new_process(*values: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _KEY_OF_FILTER, *values], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_count_key_is_the_same_in_every_process_and_differs_with_any_value() -> None:
    """Processes sharing Redis share totals: the key depends on the SQL and values only."""
    key = _key_in_a_new_process("todo", "report")
    assert _key_in_a_new_process("todo", "report") == key
    assert _key_in_a_new_process("done", "report") != key
    assert _key_in_a_new_process("todo", "reports") != key
    assert _key_in_a_new_process("report", "todo") != key  # values swapped between filters


def test_one_shape_with_other_values_gets_other_keys_in_one_process() -> None:
    """The shape (SQL) is remembered per process; the values still make the key."""
    from sqlalchemy import func, select
    from sqlalchemy.dialects import postgresql

    from tenantry.core.counts import statement_key
    from tenantry.modules.tasks.models import Task

    def key(status: str) -> tuple[str, bool]:
        statement = select(func.count()).select_from(Task).where(Task.status == status)
        return statement_key(postgresql.dialect(), statement)

    assert key("todo") == key("todo")
    assert key("todo")[0] != key("done")[0]
    assert key("todo")[1] is True  # tasks are tenant-owned: writes invalidate the entry
