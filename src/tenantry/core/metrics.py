"""Prometheus metrics of one application instance (its own registry: no global state).

Requests are labelled by route *template* (`/api/v1/orgs/{orgId}`), never by raw path,
so label cardinality stays bounded. With several worker processes, set
`PROMETHEUS_MULTIPROC_DIR` and every process writes there; `/metrics` aggregates.

Per tenant (`TenantMetrics`): request count, latency and database time labelled by
organization for the `TENANT_METRICS_TOP_N` busiest organizations only, every other one
under `organization="other"`. "Busiest" comes from a space-saving summary (`HeavyHitters`,
fixed memory) of the organizations of recent requests; see docs/tenancy.md section 11.

A request's facts travel in one typed object, `RequestSample`, which the request boundary
(core/middleware.py) makes current in a context variable for the request's task: the
tenant gate names its organization (`attribute_request`), and the database time of its
statements is added up by engine events (`install_statement_timing`) and around the
round trips that bypass them (`DatabaseTime`: hot reads, COMMIT).
"""

from __future__ import annotations

import heapq
import os
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tenantry.core.db import Database

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_ORGANIZATIONS = "other"
DEFAULT_TENANT_TOP_N = 20


# --- one request's facts --------------------------------------------------------------------


class RequestSample:
    """What one request did that the metrics want: its organization and database time.

    Database time is the wall time during which at least one of the request's statements
    was in flight (the union of the intervals: statements run concurrently by one request
    are not counted twice).
    """

    __slots__ = ("_in_flight", "_since", "db_seconds", "organization_id")

    def __init__(self) -> None:
        self.organization_id: uuid.UUID | None = None
        self.db_seconds = 0.0
        self._in_flight = 0
        self._since = 0.0

    def database_started(self) -> None:
        if self._in_flight == 0:
            self._since = time.perf_counter()
        self._in_flight += 1

    def database_finished(self) -> None:
        if self._in_flight == 0:  # an error event without its statement's start
            return
        self._in_flight -= 1
        if self._in_flight == 0:
            self.db_seconds += time.perf_counter() - self._since


_SAMPLE: ContextVar[RequestSample | None] = ContextVar("tenantry_request_sample", default=None)


def begin_request_sample() -> tuple[RequestSample, Token[RequestSample | None]]:
    """Make a new sample current for this task (the request boundary calls it)."""
    sample = RequestSample()
    return sample, _SAMPLE.set(sample)


def end_request_sample(token: Token[RequestSample | None]) -> None:
    _SAMPLE.reset(token)


def current_request_sample() -> RequestSample | None:
    return _SAMPLE.get()


def attribute_request(organization_id: uuid.UUID) -> None:
    """The current request serves `organization_id` (called once the tenant gate let it in)."""
    sample = _SAMPLE.get()
    if sample is not None:
        sample.organization_id = organization_id


class DatabaseTime:
    """Count the block as database time of the current request (round trips that do not
    go through a cursor: the hot reads' raw driver calls, COMMIT and ROLLBACK)."""

    __slots__ = ("_sample",)

    def __enter__(self) -> None:
        sample = self._sample = _SAMPLE.get()
        if sample is not None:
            sample.database_started()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._sample is not None:
            self._sample.database_finished()


def _statement_started(*_args: Any) -> None:
    sample = _SAMPLE.get()
    if sample is not None:
        sample.database_started()


def _statement_finished(*_args: Any) -> None:
    sample = _SAMPLE.get()
    if sample is not None:
        sample.database_finished()


def _statement_failed(context: ExceptionContext) -> None:
    # A statement that fails gets no after_cursor_execute. (Errors without an execution
    # context — connecting, compiling — come before any before_cursor_execute.)
    if context.execution_context is not None:
        _statement_finished()


def install_statement_timing(engine: AsyncEngine) -> None:
    """Add the time of every statement `engine` runs to the current request's sample
    (idempotent; one context-variable read per statement outside requests)."""
    sync_engine = engine.sync_engine
    for name, listener in (
        ("before_cursor_execute", _statement_started),
        ("after_cursor_execute", _statement_finished),
        ("handle_error", _statement_failed),
    ):
        if not event.contains(sync_engine, name, listener):
            event.listen(sync_engine, name, listener)


# --- the busiest organizations ----------------------------------------------------------------


class HeavyHitters:
    """The space-saving summary (Metwally, Agrawal, El Abbadi 2005) in O(1) per offer.

    At most `capacity` keys are monitored, each with a count that overestimates its true
    count by at most the smallest count in the summary; a key seen more than
    total / capacity times is always monitored. A new key, when the summary is full,
    replaces one with the smallest count and inherits that count plus one. Keys sit in
    buckets by count (the "stream summary"), so finding the smallest is O(1).
    """

    __slots__ = ("_buckets", "_counts", "_floor", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._counts: dict[uuid.UUID, int] = {}
        self._buckets: dict[int, dict[uuid.UUID, None]] = {}  # count → keys (ordered set)
        self._floor = 0  # the smallest count present (0 when empty)

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: uuid.UUID) -> int:
        return self._counts.get(key, 0)

    def offer(self, key: uuid.UUID) -> None:
        counts = self._counts
        current = counts.get(key)
        if current is not None:
            self._move(key, current, current + 1)
            return
        if len(counts) < self.capacity:
            counts[key] = 1
            self._buckets.setdefault(1, {})[key] = None
            self._floor = 1
            return
        floor = self._floor
        victims = self._buckets[floor]
        victim = next(iter(victims))
        del victims[victim]
        del counts[victim]
        if not victims:
            del self._buckets[floor]
            self._floor = floor + 1  # `key` lands at floor + 1: nothing is lower now
        counts[key] = floor + 1
        self._buckets.setdefault(floor + 1, {})[key] = None

    def _move(self, key: uuid.UUID, old: int, new: int) -> None:
        bucket = self._buckets[old]
        del bucket[key]
        if not bucket:
            del self._buckets[old]
            if old == self._floor:
                self._floor = new
        self._counts[key] = new
        self._buckets.setdefault(new, {})[key] = None

    def top(self, n: int) -> list[uuid.UUID]:
        """The `n` keys with the highest counts, highest first."""
        return heapq.nlargest(n, self._counts, key=self._counts.__getitem__)

    def halve(self) -> None:
        """Halve every count (dropping keys at 0): recent traffic weighs more than old."""
        counts = {key: count // 2 for key, count in self._counts.items() if count > 1}
        self._counts = counts
        self._buckets = {}
        for key, count in counts.items():
            self._buckets.setdefault(count, {})[key] = None
        self._floor = min(self._buckets, default=0)


# One organization's children of the three per-tenant metrics: requests, latency, DB time.
_Series = tuple[Counter, Histogram, Counter]


class TenantMetrics:
    """Requests, latency and database time per organization, for the top N only.

    An organization gets its own label value while it is among the `top_n` busiest of the
    heavy-hitters summary (and, until the first `top_n` slots are taken, on first sight);
    all others are counted under `organization="other"`. Every `refresh_every` requests
    the labelled set becomes the summary's current top N — the series of an organization
    that dropped out are removed — and the summary's counts are halved. So at most
    `top_n + 1` organization values exist per metric at any time.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        top_n: int,
        capacity: int | None = None,
        refresh_every: int = 1000,
        can_forget: bool = True,
    ) -> None:
        self.top_n = top_n
        # prometheus_client cannot remove a series in multiprocess mode: there a labelled
        # organization keeps its label for the life of the process (still at most N).
        self.can_forget = can_forget
        self.refresh_every = refresh_every
        self.summary = HeavyHitters(capacity or max(4 * top_n, 64))
        self._labelled: dict[uuid.UUID, _Series] = {}
        self._other: _Series | None = None
        self._until_refresh = refresh_every
        self.requests = Counter(
            "tenantry_tenant_http_requests",
            "HTTP requests served to an organization (top N organizations, others as 'other')",
            ["organization"],
            registry=registry,
        )
        self.latency = Histogram(
            "tenantry_tenant_http_request_duration_seconds",
            "HTTP request latency per organization (top N organizations, others as 'other')",
            ["organization"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.database = Counter(
            "tenantry_tenant_database_seconds",
            "Database time of requests per organization (top N organizations, others as 'other')",
            ["organization"],
            registry=registry,
        )

    @property
    def labelled(self) -> frozenset[uuid.UUID]:
        return frozenset(self._labelled)

    def observe(self, organization_id: uuid.UUID, seconds: float, db_seconds: float) -> None:
        self.summary.offer(organization_id)
        series = self._labelled.get(organization_id)
        if series is None:
            if len(self._labelled) < self.top_n:
                series = self._labelled[organization_id] = self._series(str(organization_id))
            else:
                series = self._other or self._other_series()
        requests, latency, database = series
        requests.inc()
        latency.observe(seconds)
        if db_seconds:
            database.inc(db_seconds)
        self._until_refresh -= 1
        if self._until_refresh <= 0:
            self.refresh()

    def refresh(self) -> None:
        """Label the summary's current top N; forget the series of the others."""
        self._until_refresh = self.refresh_every
        top = self.summary.top(self.top_n)
        keep = set(top) if self.can_forget else set(self._labelled)
        for organization_id in [org for org in self._labelled if org not in keep]:
            del self._labelled[organization_id]
            for metric in (self.requests, self.latency, self.database):
                metric.remove(str(organization_id))
        for organization_id in top:
            if len(self._labelled) >= self.top_n:
                break
            if organization_id not in self._labelled:
                self._labelled[organization_id] = self._series(str(organization_id))
        self.summary.halve()

    def _series(self, label: str) -> _Series:
        # The children, looked up once: `.labels()` costs ~1 µs per call on the hot path.
        return (
            self.requests.labels(label),
            self.latency.labels(label),
            self.database.labels(label),
        )

    def _other_series(self) -> _Series:
        self._other = self._series(OTHER_ORGANIZATIONS)
        return self._other


class PoolCollector(Collector):
    """Database connection pool figures, read at scrape time."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterable[Metric]:
        pool = self.database.engine.sync_engine.pool
        figures = {
            "size": getattr(pool, "size", lambda: 0)(),
            "checked_out": getattr(pool, "checkedout", lambda: 0)(),
            "overflow": getattr(pool, "overflow", lambda: 0)(),
        }
        gauge = GaugeMetricFamily(
            "tenantry_db_pool_connections", "Database pool connections", labels=["state"]
        )
        for state, value in figures.items():
            gauge.add_metric([state], float(value))
        yield gauge


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, database: Database | None = None, *, tenant_top_n: int = DEFAULT_TENANT_TOP_N
    ) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tenantry_http_requests",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tenantry_http_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tenants = (
            TenantMetrics(self.registry, top_n=tenant_top_n, can_forget=not self.multiprocess_dir)
            if tenant_top_n > 0
            else None
        )
        if database is not None:
            self.registry.register(PoolCollector(database))
            install_statement_timing(database.engine)

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        sample: RequestSample | None = None,
    ) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if sample is not None and sample.organization_id is not None and self.tenants:
            self.tenants.observe(sample.organization_id, seconds, sample.db_seconds)

    def render(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
