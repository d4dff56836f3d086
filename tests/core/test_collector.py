"""`tenantry serve` settles the collector once the app is built (see core/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tenantry.core import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_the_startup_heap_and_raises_the_young_threshold(
    restored_collector: None,
) -> None:
    collector.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *collector.OLDER_THRESHOLDS)
