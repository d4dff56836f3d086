"""The garbage collector, set for the long-running HTTP server process (`tenantry serve`).

Measured on the get-by-id benchmark (docs/performance.md, "the collector"): with
CPython's defaults a full collection walks everything the app built at startup (modules,
routes, pydantic and SQLAlchemy's compiled structures) and took ~130 ms, stalling every
request in flight (the p99 spikes at 32 connections), and young collections ran every 700
container allocations — a few times per request, each walking the objects of all the
requests in flight. Collected garbage here is mostly the reference cycles each request's
session leaves, which are small: collecting them less often costs a few MB, not latency.

`settle()` is called once the app is built, before serving: what exists then lives as long
as the process and is moved out of the collector's sight (`gc.freeze`), and the young
generation is collected every `YOUNG_THRESHOLD` allocations. Tests build many apps in one
process and never call it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default is 700
OLDER_THRESHOLDS = (10, 10)  # unchanged: a full collection after 100 young ones, as before


def settle() -> None:
    """Freeze the startup heap and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
