"""Micro-benchmark: what per-tenant metrics add to one request (docs/performance.md).

    python -m bench.tenant_metrics [--organizations 1000] [--top-n 20]

Times, in process and without I/O, the pieces a request pays for:
- the request boundary's sample (make it current, attribute it, reset it);
- `Metrics.observe` without and with an organization: a labelled one (the common case
  for the busiest tenants) and the long tail counted under "other";
- the engine event pair around one statement (with and without a current sample).
Each figure is the best of 7 runs of `timeit`, in µs per call.
"""

from __future__ import annotations

import argparse
import itertools
import random
import timeit
import uuid
from collections.abc import Callable

from tenantry.core.metrics import (
    Metrics,
    _statement_finished,
    _statement_started,
    attribute_request,
    begin_request_sample,
    end_request_sample,
)


def best_us(function: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--organizations", type=int, default=1000)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--number", type=int, default=50_000)
    args = parser.parse_args()
    number = args.number

    metrics = Metrics(tenant_top_n=args.top_n)
    rng = random.Random(1)
    organizations = [uuid.uuid4() for _ in range(args.organizations)]
    tenants = metrics.tenants
    assert tenants is not None
    for _ in range(20_000):  # settle the summary: a skewed load, the top N labelled
        tenants.observe(organizations[int(rng.paretovariate(1.2)) % len(organizations)], 0.01, 0)
    labelled = next(iter(tenants.labelled))
    tail = [org for org in organizations if org not in tenants.labelled]
    tail_cycle = itertools.cycle(tail)

    def sample_lifecycle() -> None:
        _sample, token = begin_request_sample()
        attribute_request(labelled)
        end_request_sample(token)

    sample, _token = begin_request_sample()
    sample.organization_id = labelled
    sample.db_seconds = 0.001

    def observe_without() -> None:
        metrics.observe("GET", "/api/v1/orgs/{orgId}/projects", 200, 0.01)

    def observe_labelled() -> None:
        metrics.observe("GET", "/api/v1/orgs/{orgId}/projects", 200, 0.01, sample)

    tail_sample, _ = begin_request_sample()
    tail_sample.db_seconds = 0.001

    def observe_tail() -> None:
        tail_sample.organization_id = next(tail_cycle)
        metrics.observe("GET", "/api/v1/orgs/{orgId}/projects", 200, 0.01, tail_sample)

    def tenant_labelled() -> None:
        tenants.observe(labelled, 0.01, 0.001)

    def tenant_tail() -> None:
        tenants.observe(next(tail_cycle), 0.01, 0.001)

    def statement_events() -> None:
        _statement_started()
        _statement_finished()

    rows = [
        ("request sample: begin + attribute + end", best_us(sample_lifecycle, number)),
        ("Metrics.observe, no organization (before)", best_us(observe_without, number)),
        ("Metrics.observe, a top-N organization", best_us(observe_labelled, number)),
        ("Metrics.observe, a long-tail organization", best_us(observe_tail, number)),
        ("  of which TenantMetrics.observe, top N", best_us(tenant_labelled, number)),
        ("  of which TenantMetrics.observe, long tail", best_us(tenant_tail, number)),
        ("statement events, in a request", best_us(statement_events, number)),
    ]
    end_request_sample(_token)
    rows.append(("statement events, outside requests", best_us(statement_events, number)))
    for name, micros in rows:
        print(f"{name:<45} {micros:6.2f} µs")


if __name__ == "__main__":
    main()
