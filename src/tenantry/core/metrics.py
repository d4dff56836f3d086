"""Prometheus metrics of one application instance (its own registry: no global state).

Requests are labelled by route *template* (`/api/v1/orgs/{orgId}`), never by raw path,
so label cardinality stays bounded. With several worker processes, set
`PROMETHEUS_MULTIPROC_DIR` and every process writes there; `/metrics` aggregates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from tenantry.core.db import Database

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    def __init__(self, database: Database | None = None) -> None:
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
        if database is not None:
            self.registry.register(PoolCollector(database))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
