"""Fixtures for the backend contract tests: a real Redis client (services only), unique prefixes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import RUN_ID, TEST_REDIS_URL

# Each contract test runs against the embedded implementation always and against the
# Redis one only under `make test-services`.
BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.services)]
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix unique to the test (inside the run's prefix, cleaned at the end)."""
    return f"tenantry-test-{RUN_ID}:{uuid.uuid4().hex[:8]}:"


def connect_test_redis() -> Redis:
    return Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = connect_test_redis()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        yield client
    finally:
        await client.aclose()
