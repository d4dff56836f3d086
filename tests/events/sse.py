"""An SSE client for tests that drives the ASGI app directly.

httpx's ASGITransport returns a response only once the app has finished, which an event
stream never does; this calls the app with its own `receive`/`send` instead, so a test
reads frames as they are sent and ends the stream by disconnecting, like a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import FastAPI


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    data: Any = None
    comment: str | None = None
    retry: int | None = None


@dataclass
class Stream:
    status: int
    headers: dict[str, str]
    body: bytes = b""  # the whole body of a refused stream (an error envelope)
    frames: asyncio.Queue[Frame | None] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self, timeout: float = 5.0) -> Frame | None:
        """The next frame (None once the server ended the stream)."""
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def events(self, count: int, timeout: float = 10.0) -> list[Frame]:
        """The next `count` events (comments and `retry:` lines skipped)."""
        found: list[Frame] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                frame = await self.frames.get()
                assert frame is not None, f"the stream ended after {found}"
                if frame.event is not None:
                    found.append(frame)
        return found

    async def quiet(self, seconds: float) -> list[Frame]:
        """The events that arrive within `seconds` (comments skipped)."""
        found: list[Frame] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    frame = await self.frames.get()
                    if frame is None:
                        break
                    if frame.event is not None:
                        found.append(frame)
        return found

    async def wait_ended(self, timeout: float) -> None:
        """Until the server ends the stream (frames before it are dropped)."""
        async with asyncio.timeout(timeout):
            while (await self.frames.get()) is not None:
                pass


def _parse(block: bytes) -> Frame:
    frame = Frame()
    data: list[str] = []
    for line in block.decode().split("\n"):
        if line.startswith(":"):
            frame.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            frame.retry = int(value)
    if data:
        frame.data = orjson.loads("\n".join(data))
    return frame


@asynccontextmanager
async def open_stream(
    app: FastAPI,
    org_id: str,
    headers: dict[str, str] | None = None,
    **query: str,
) -> AsyncIterator[Stream]:
    """GET /api/v1/orgs/{org_id}/events; yields once the response has started."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/v1/orgs/{org_id}/events",
        "raw_path": f"/api/v1/orgs/{org_id}/events".encode(),
        "query_string": urlencode(query).encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *raw_headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    gone = asyncio.Event()
    started: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    stream: Stream | None = None
    buffer = b""

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal stream, buffer
        if message["type"] == "http.response.start":
            headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            stream = Stream(status=message["status"], headers=headers)
            if stream.status != 200:
                return
            assert "content-length" not in headers  # an endless body
            started.set_result(stream)
            return
        assert stream is not None
        body = message.get("body", b"")
        if stream.status != 200:
            stream.body += body
            if not message.get("more_body") and not started.done():
                started.set_result(stream)
            return
        buffer += body
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            stream.frames.put_nowait(_parse(block))
        if not message.get("more_body"):
            stream.frames.put_nowait(None)
            stream.ended.set()

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            if stream is not None and not stream.ended.is_set():
                stream.frames.put_nowait(None)
                stream.ended.set()

    task = asyncio.create_task(run())
    try:
        yield await asyncio.wait_for(asyncio.shield(started), 10)
    finally:
        gone.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
