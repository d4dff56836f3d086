"""Fixed costs of every request that are configuration, not code paths: checked here."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from tenantry.services import services_of


@pytest.mark.services
async def test_redis_replies_are_parsed_by_hiredis(app: FastAPI) -> None:
    # redis-py's pure-Python parser was ~7 % of a cached read's CPU; hiredis parses in C.
    redis = services_of(app).redis
    assert redis is not None
    connection = redis.connection_pool.make_connection()
    assert type(connection._parser).__name__ == "_AsyncHiredisParser"


def test_json_routes_keep_the_pydantic_dump_json_path(app: FastAPI) -> None:
    # FastAPI serialises a route's response model straight to bytes in pydantic-core when
    # the route keeps the default response class: 3.3 µs for a task envelope against
    # 6.3 µs through an orjson response class (same bytes) — docs/decisions.md.
    from fastapi.datastructures import DefaultPlaceholder
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute, iter_route_contexts

    routes = [context.route for context in iter_route_contexts(app.routes)]
    json_routes = [r for r in routes if isinstance(r, APIRoute) and r.response_field is not None]
    assert len(json_routes) > 50
    for route in json_routes:
        assert isinstance(route.response_class, DefaultPlaceholder), route.path
        assert route.response_class.value is JSONResponse, route.path
