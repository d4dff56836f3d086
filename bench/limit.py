"""Reference endpoints: what this machine serves with no application in the way.

    uv run python -m bench.limit constant --port 8200
    uv run python -m bench.limit asyncpg --port 8200 \\
        --database-url postgresql://postgres@127.0.0.1:5432/tenantry_bench

`constant` answers every request with one constant JSON body; `asyncpg` answers
`GET /task?id=<uuid>` with one primary-key fetch of that task as JSON (404 when absent).
Both are bare ASGI callables served by uvicorn with the options `tenantry serve` uses
(its default event loop and HTTP implementation, no access log, no server header), so
bench/run.py can report every figure of the API as a fraction of these ceilings.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# asyncpg returns its own UUID type, which orjson leaves to `default`.
CONSTANT_BODY = orjson.dumps({"success": True, "data": {"status": "ok"}})
TASK_QUERY = (
    "SELECT id, organization_id, project_id, title, description, status, priority, "
    "assignee_id, due_date, created_at, updated_at, deleted_at, created_by, updated_by, "
    "version FROM tasks WHERE id = $1"
)
# The application's pool: DATABASE_POOL_SIZE 10 + DATABASE_MAX_OVERFLOW 10 (config.py).
POOL_SIZE = 20


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send, startup: Callable[[], Awaitable[None]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _nothing() -> None:
    return None


async def constant_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Every HTTP request: 200 and the same small JSON body."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send, _nothing)
    elif scope["type"] == "http":
        await _respond(send, 200, CONSTANT_BODY)


def asyncpg_app(database_url: str) -> ASGIApp:
    """`GET /task?id=...`: one pooled asyncpg fetch by primary key, the row as JSON."""
    pools: list[asyncpg.Pool] = []

    async def startup() -> None:
        pools.append(
            await asyncpg.create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, startup)
            return
        if scope["type"] != "http":
            return
        values = parse_qs(scope["query_string"].decode()).get("id", [])
        try:
            task_id = uuid.UUID(values[0])
        except (IndexError, ValueError):
            await _respond(send, 400, b'{"success": false}')
            return
        row = await pools[0].fetchrow(TASK_QUERY, task_id)
        if row is None:
            await _respond(send, 404, b'{"success": false}')
            return
        await _respond(send, 200, orjson.dumps({"success": True, "data": dict(row)}, default=str))

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=("constant", "asyncpg"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--database-url", help="postgresql://... (the asyncpg app)")
    args = parser.parse_args(argv)
    if args.app == "asyncpg" and not args.database_url:
        parser.error("asyncpg needs --database-url")
    app = constant_app if args.app == "constant" else asyncpg_app(args.database_url)
    # The options of `tenantry serve` (cli.py): uvicorn's default loop and HTTP parser.
    uvicorn.run(
        app, host=args.host, port=args.port, log_config=None, access_log=False, server_header=False
    )


if __name__ == "__main__":
    main()
