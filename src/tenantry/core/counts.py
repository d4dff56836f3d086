"""Cached `meta.total` of offset pages, exact for every reader after a write commits.

A `COUNT(*)` over an organization's 200,000 tasks takes tens of milliseconds however good
the index (it is proportional to the rows counted); page after page of the same list asks
for the same number. So totals are cached per organization and query, tagged with the
organization's *count generation*:

- a lookup reads the generation and the entry in one round trip (`Cache.get_many`) and
  uses the entry only when its tag is the current generation;
- every commit that wrote a tenant-owned row of an organization (insert, update, soft or
  hard delete; any table, since a project's deletion changes its tasks' lists) gives that
  organization a new generation before the commit returns, so the next request — this
  client's or anyone's, in any process sharing the cache — counts again;
- a count computed while a write commits is stored under the generation read *before*
  counting, which that commit has already replaced: it is never served.

A recount never herds. Within a process, the requests that miss the same entry under
the same generation share one `COUNT` (single flight): the first counts, the others
await its result. Across processes sharing the cache, the first takes a short lock
(`Cache.add`, `RECOUNT_LOCK_SECONDS`) and the others poll for the entry it stores, for
at most that long, before counting on their own. Only a count for the very generation
a request read is shared, so the guarantee above is unchanged.

Entries also expire after `ENTRY_TTL_SECONDS`, bounding what a write outside the ORM (a
manual SQL fix) can leave behind. The key is the SQL text and parameters of the count
statement plus the organization, so two queries that could differ in their rows (a
filter, a search term, `:own` trash) never share an entry. Sessions bound with
`bind_counts` use it; anything else counts every time.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.util import find_tables
from sqlalchemy.util import await_only

from tenantry.core.cache import Cache
from tenantry.core.db import Base, Database, TenantOwned, Wired, wiring_of
from tenantry.core.tenancy import tenant_of

log = logging.getLogger(__name__)

ENTRY_TTL_SECONDS = 300.0
# Another process's recount of the same entry: waited for at most this long (a COUNT
# over 200,000 rows takes tens of milliseconds), then this process counts on its own.
RECOUNT_LOCK_SECONDS = 2.0
RECOUNT_POLL_SECONDS = 0.01


class _LeaderFailed(Exception):
    """The request counting for the others failed or was cancelled: count on your own."""


_WRITTEN = "count_cache_written_orgs"


class CountCache:
    """Totals per organization and query, invalidated by the organization's writes."""

    def __init__(self, cache: Cache, *, ttl: float = ENTRY_TTL_SECONDS) -> None:
        self._cache = cache
        self._ttl = ttl
        # (entry key, generation) → the total being counted by one request of this process.
        self._flights: dict[tuple[str, str], asyncio.Future[int]] = {}

    @staticmethod
    def _generation_key(org_id: uuid.UUID) -> str:
        return f"count-gen:{org_id}"

    async def total(
        self, org_id: uuid.UUID, query_key: str, count: Callable[[], Awaitable[int]]
    ) -> int:
        entry_key = f"count:{org_id}:{query_key}"
        generation, entry = await self._cache.get_many([self._generation_key(org_id), entry_key])
        tag = (generation or b"0").decode()
        cached = _stored_total(entry, tag)
        if cached is not None:
            return cached
        flight = self._flights.get((entry_key, tag))
        if flight is not None:
            try:
                # Shielded: a waiter's cancellation must not cancel the leader's count.
                return await asyncio.shield(flight)
            except _LeaderFailed:
                return await count()
        return await self._lead(entry_key, tag, count)

    async def _lead(self, entry_key: str, tag: str, count: Callable[[], Awaitable[int]]) -> int:
        """Count for every request of this process that misses `entry_key` under `tag`."""
        flight: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        flight.add_done_callback(_consume_failure)
        self._flights[(entry_key, tag)] = flight
        try:
            total = await self._count_once(entry_key, tag, count)
        except BaseException:
            flight.set_exception(_LeaderFailed())
            raise
        else:
            flight.set_result(total)
            return total
        finally:
            self._flights.pop((entry_key, tag), None)

    async def _count_once(
        self, entry_key: str, tag: str, count: Callable[[], Awaitable[int]]
    ) -> int:
        """Count and store; or, when another process is counting, wait for its entry."""
        lock_key = f"{entry_key}:recount:{tag}"
        if not await self._cache.add(lock_key, b"1", ttl=RECOUNT_LOCK_SECONDS):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + RECOUNT_LOCK_SECONDS
            while loop.time() < deadline:
                await asyncio.sleep(RECOUNT_POLL_SECONDS)
                stored = _stored_total(await self._cache.get(entry_key), tag)
                if stored is not None:
                    return stored
        try:
            total = await count()
            value = orjson.dumps({"generation": tag, "total": total})
            await self._cache.set(entry_key, value, ttl=self._ttl)
        finally:
            await self._cache.delete(lock_key)
        return total

    async def invalidate(self, org_ids: set[uuid.UUID]) -> None:
        for org_id in org_ids:
            # A fresh random tag (not a counter): no read-modify-write race between writers.
            await self._cache.set(
                self._generation_key(org_id), uuid.uuid4().hex.encode(), ttl=self._ttl * 2
            )


def _stored_total(entry: bytes | None, tag: str) -> int | None:
    """The total of a cache entry, if it was counted under generation `tag`."""
    if entry is None:
        return None
    stored = orjson.loads(entry)
    return int(stored["total"]) if stored.get("generation") == tag else None


def _consume_failure(flight: asyncio.Future[int]) -> None:
    """A failed flight nobody awaited must not log "exception was never retrieved"."""
    if not flight.cancelled():
        flight.exception()


COUNTS: Wired[CountCache] = Wired("list totals")


def bind_counts(database: Database, counts: CountCache) -> None:
    """Every session of `database` caches totals in `counts` and invalidates them."""
    database.wiring.provide(COUNTS, counts)


class _Shape:
    """What a count statement's *shape* (its SQL without parameter values) tells once."""

    __slots__ = ("sql", "tenant_only")

    def __init__(self, sql: str, tenant_only: bool) -> None:
        self.sql = sql
        self.tenant_only = tenant_only


# Keyed by SQLAlchemy's cache key of the statement (dialect + structure, no values), as
# its own compiled cache is: compiling a list's count statement to SQL on every request
# was ~10 % of a list's CPU (docs/performance.md). Bounded: the shapes are the app's
# queries (filters x sorts), a few hundred at most; past the bound it starts over.
_SHAPES: dict[tuple[str, Any], _Shape] = {}
_MAX_SHAPES = 2_000


def _shape(dialect: Dialect, statement: Select[Any], structure: Any) -> _Shape:
    key = (dialect.name, structure)
    shape = _SHAPES.get(key)
    if shape is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        shape = _Shape(str(statement.compile(dialect=dialect)), _only_tenant_tables(statement))
        _SHAPES[key] = shape
    return shape


def statement_key(dialect: Dialect, statement: Select[Any]) -> tuple[str, bool]:
    """A stable digest of a statement's SQL and parameters (the same in every process),
    and whether every table the statement reads is tenant-owned."""
    cache_key = statement._generate_cache_key()
    if cache_key is None:  # a construct SQLAlchemy cannot cache: compile it every time
        compiled = statement.compile(dialect=dialect)
        sql = str(compiled)
        values = [str(value) for _name, value in sorted(compiled.params.items())]
        tenant_only = _only_tenant_tables(statement)
    else:
        shape = _shape(dialect, statement, cache_key.key)
        sql, tenant_only = shape.sql, shape.tenant_only
        # In traversal order, which the shape fixes: the same values ↔ the same rows.
        values = [str(bind.effective_value) for bind in cache_key.bindparams]
    digest = hashlib.blake2b(
        f"{sql}\x00{values}".encode(), digest_size=16, usedforsecurity=False
    ).hexdigest()
    return digest, tenant_only


async def cached_total(
    session: AsyncSession, statement: Select[Any], count: Callable[[], Awaitable[int]]
) -> int:
    """`count()`, or its cached value for the session's organization and `statement`."""
    counts = wiring_of(session).get(COUNTS)
    context = tenant_of(session)
    if counts is None or context is None:
        return await count()
    key, tenant_only = statement_key(session.get_bind().dialect, statement)
    if not tenant_only:
        return await count()
    return await counts.total(context.organization_id, key, count)


def _only_tenant_tables(statement: Select[Any]) -> bool:
    """Whether every table the statement reads is tenant-owned (so its writes invalidate)."""
    owned = _tenant_tables(len(Base.registry.mappers))
    return all(table in owned for table in find_tables(statement, include_joins=False))


@functools.cache
def _tenant_tables(_mapper_count: int) -> frozenset[Any]:
    """The tenant-owned tables (recomputed only when a model is mapped after the first call)."""
    return frozenset(
        mapper.local_table
        for mapper in Base.registry.mappers
        if issubclass(mapper.class_, TenantOwned)
    )


def _remember_flushed(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, TenantOwned) and obj.organization_id is not None:
            session.info.setdefault(_WRITTEN, set()).add(obj.organization_id)


def _remember_statements(state: ORMExecuteState) -> None:
    """ORM `update()`/`delete()`/`insert()` statements skip the flush: count them here.

    Only those: a `text()` statement (a `set_config`) is neither a select nor DML here.
    """
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    context = tenant_of(state.session)
    if context is not None:
        state.session.info.setdefault(_WRITTEN, set()).add(context.organization_id)


def _invalidate_committed(session: Session) -> None:
    written: set[uuid.UUID] = session.info.pop(_WRITTEN, set())
    counts = wiring_of(session).get(COUNTS)
    if not written or counts is None:
        return
    try:
        # Inside AsyncSession.commit(): the listener runs in SQLAlchemy's greenlet, so the
        # cache write finishes before commit() returns (and before the response is sent).
        await_only(counts.invalidate(written))
    except Exception as exc:  # the data is committed; entries expire within their TTL
        log.warning("count cache not invalidated for %d organization(s): %s", len(written), exc)


# Registered by every `Database` on its own session class (core/db.py). A rolled-back
# write leaves its organizations in the set: one needless recount at most.
COUNT_LISTENERS = (
    ("before_flush", _remember_flushed),
    ("do_orm_execute", _remember_statements),
    ("after_commit", _invalidate_committed),
)
