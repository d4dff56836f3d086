"""The event stream of an organization (API.md, "Real-time events"), on both backends."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.events.sse import open_stream
from tests.factories import create_org, register


async def test_a_change_reaches_the_stream(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        first = await stream.next()
        assert first is not None and first.retry == 3000
        created = await client.post(
            f"{org.path}/projects", json={"name": "live"}, headers=owner.headers
        )
        assert created.status_code == 201
        [event] = await stream.events(1)
        assert event.event == "project.created"
        assert event.data["entityId"] == created.json()["data"]["id"]
        assert event.data["version"] == 1
        assert event.data["actorUserId"] == owner.user["id"]
