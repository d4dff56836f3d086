"""The event stream of an organization (API.md, "Real-time events"), on both backends.

Streams are read by driving the ASGI app directly (tests/events/sse.py): what a browser's
EventSource would see, frame by frame.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tenantry.core.events import Outgoing, publish_after_commit
from tenantry.core.jobs.session import unit_of_work
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.audit.service import record
from tenantry.services import services_of
from tests.conftest import client_for
from tests.events.sse import Frame, open_stream
from tests.factories import (
    Account,
    Org,
    add_member,
    api_key_headers,
    create_api_key,
    create_org,
    register,
)

BuildApp = Callable[..., Awaitable[FastAPI]]


async def _project(client: httpx.AsyncClient, org: Org, name: str, by: Account) -> str:
    response = await client.post(f"{org.path}/projects", json={"name": name}, headers=by.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def _ids(frames: list[Frame]) -> list[tuple[int, int]]:
    parsed = []
    for frame in frames:
        assert frame.id is not None
        ms, _, seq = frame.id.partition("-")
        parsed.append((int(ms), int(seq)))
    return parsed


async def test_a_change_reaches_the_stream(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        first = await stream.next()
        assert first is not None
        assert first.retry == 3000
        project = await _project(client, org, "live", owner)
        [event] = await stream.events(1)
        assert event.event == "project.created"
        assert event.data == {
            "entityType": "project",
            "entityId": project,
            "action": "project.created",
            "version": 1,
            "actorUserId": owner.id,
            "actorApiKeyId": None,
            "changes": event.data["changes"],
            "at": event.data["at"],
        }
        assert event.data["changes"]["name"] == [None, "live"]
        renamed = await client.patch(
            f"{org.path}/projects/{project}", json={"name": "renamed"}, headers=owner.headers
        )
        assert renamed.status_code == 200
        [update] = await stream.events(1)
        assert (update.event, update.data["version"]) == ("project.updated", 2)
        assert update.data["changes"] == {"name": ["live", "renamed"]}


async def test_events_of_an_organization_arrive_in_commit_order_with_increasing_ids(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        names = [f"p{i:02d}" for i in range(20)]
        for name in names:
            await _project(client, org, name, owner)
        frames = await stream.events(20)
    assert [f.data["changes"]["name"][1] for f in frames] == names
    ids = _ids(frames)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


async def test_a_reconnection_with_last_event_id_replays_without_gap_or_duplicate(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        for i in range(3):
            await _project(client, org, f"before-{i}", owner)
        seen = await stream.events(3)
    for i in range(4):  # while the client is away
        await _project(client, org, f"away-{i}", owner)
    last = seen[-1].id
    assert last is not None
    missed = [f"away-{i}" for i in range(4)]
    for how in ("header", "query"):
        headers = dict(owner.headers)
        query: dict[str, str] = {}
        if how == "header":
            headers["Last-Event-ID"] = last
        else:
            query["lastEventId"] = last
        async with open_stream(app, org.id, headers, **query) as stream:
            replayed = await stream.events(len(missed))
            await _project(client, org, f"live-{how}", owner)
            [live] = await stream.events(1)
            assert await stream.quiet(0.3) == []
        assert [f.data["changes"]["name"][1] for f in replayed] == missed, how
        assert live.data["changes"]["name"][1] == f"live-{how}"
        ids = _ids([*seen, *replayed, live])
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        seen = [*seen, *replayed, live]
        assert live.id is not None
        last = live.id  # the next reconnection resumes after this one's live event
        await _project(client, org, "between", owner)
        missed = ["between"]


async def test_an_id_older_than_the_buffer_gets_reset_first(
    build_app: BuildApp,
) -> None:
    app = await build_app(events_buffer_size=10, rate_limit_enabled=False)
    async with client_for(app) as client:
        owner = await register(client)
        org = await create_org(client, owner)
        async with open_stream(app, org.id, owner.headers) as stream:
            await _project(client, org, "first", owner)
            [first] = await stream.events(1)
        for i in range(12):  # pushes `first` and what followed it out of the buffer
            await _project(client, org, f"later-{i}", owner)
        assert first.id is not None
        for last_id in (first.id, "not-an-id", "99999999999999-0"):
            headers = {**owner.headers, "Last-Event-ID": last_id}
            async with open_stream(app, org.id, headers) as stream:
                [reset] = await stream.events(1)
                assert reset.event == "reset", last_id
                assert await stream.quiet(0.3) == []  # no partial replay after a reset
        # An id still inside the buffer replays what follows it.
        async with open_stream(app, org.id, owner.headers) as stream:
            await _project(client, org, "kept-1", owner)
            await _project(client, org, "kept-2", owner)
            kept = await stream.events(2)
        assert kept[0].id is not None
        async with open_stream(app, org.id, {**owner.headers, "Last-Event-ID": kept[0].id}) as s:
            [replayed] = await s.events(1)
            assert replayed.data["changes"]["name"][1] == "kept-2"


async def test_a_subscriber_receives_only_events_of_what_it_may_read(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    viewer = await add_member(app, client, org, "viewer")
    projects_only = await create_api_key(client, org, ["projects:read"])
    async with (
        open_stream(app, org.id, viewer.headers) as seen_by_viewer,
        open_stream(app, org.id, api_key_headers(projects_only)) as seen_by_key,
        open_stream(app, org.id, owner.headers) as seen_by_owner,
    ):
        await create_api_key(client, org, ["tasks:read"])  # api_keys:manage only
        project = await _project(client, org, "visible", owner)
        task = await client.post(
            f"{org.path}/projects/{project}/tasks", json={"title": "t"}, headers=owner.headers
        )
        assert task.status_code == 201
        owner_names = [f.event for f in await seen_by_owner.events(3)]
        viewer_names = [f.event for f in await seen_by_viewer.events(2)]
        key_names = [f.event for f in await seen_by_key.events(1)]
        assert await seen_by_viewer.quiet(0.3) == []
        assert await seen_by_key.quiet(0.1) == []
    assert owner_names == ["api_key.created", "project.created", "task.created"]
    assert viewer_names == ["project.created", "task.created"]
    assert key_names == ["project.created"]


async def test_a_subscriber_of_another_organization_receives_nothing_under_a_write_storm(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    a_owner, b_owner = await register(client), await register(client)
    a, b = await create_org(client, a_owner), await create_org(client, b_owner)
    a_project = await _project(client, a, "storm", a_owner)

    async def a_task(i: int) -> None:
        created = await client.post(
            f"{a.path}/projects/{a_project}/tasks", json={"title": f"t{i}"}, headers=a_owner.headers
        )
        assert created.status_code == 201

    async with open_stream(app, b.id, b_owner.headers) as stream_b:
        storm = [a_task(i) for i in range(60)]
        await asyncio.gather(*storm, _project(client, b, "mine", b_owner))
        received = await stream_b.quiet(1.0)
    assert [f.data["changes"]["name"][1] for f in received] == ["mine"]
    assert {f.data["entityType"] for f in received} == {"project"}
    # Another organization's stream is a 404 like a missing organization.
    async with open_stream(app, a.id, b_owner.headers) as foreign:
        assert foreign.status == 404
    async with open_stream(app, str(uuid.uuid4()), b_owner.headers) as missing:
        assert missing.status == 404
    assert foreign.body.replace(a.id.encode(), b"X").split(b'"requestId"')[0] == (
        missing.body.split(b'"requestId"')[0].replace(
            missing.body.split(b"/orgs/")[1].split(b"/")[0], b"X"
        )
    )


async def test_a_rolled_back_change_emits_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    org_id = uuid.UUID(org.id)
    database = services_of(app).database

    async def audited_change(name: str) -> None:
        async with unit_of_work(database) as session:
            bind_tenant(session, TenantContext(organization_id=org_id, user_id=uuid.UUID(owner.id)))
            await record(session, "project.updated", "project", uuid.uuid4(), {"name": ("a", name)})
            if name == "rolled back":
                raise RuntimeError("the transaction fails after its audit entry")

    async with open_stream(app, org.id, owner.headers) as stream:
        with pytest.raises(RuntimeError):
            await audited_change("rolled back")
        await audited_change("committed")
        # A change refused by the API (validation) announces nothing either.
        refused = await client.post(
            f"{org.path}/projects", json={"name": ""}, headers=owner.headers
        )
        assert refused.status_code == 400
        received = await stream.quiet(0.5)
    assert [f.data["changes"]["name"][1] for f in received] == ["committed"]


async def test_an_event_is_published_only_after_the_commit(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    database = services_of(app).database
    async with open_stream(app, org.id, owner.headers) as stream:
        async with unit_of_work(database) as session:
            publish_after_commit(
                session, uuid.UUID(org.id), [Outgoing("project.updated", "projects:read", {})]
            )
            assert await stream.quiet(0.2) == []  # not while the transaction is open
        [event] = await stream.events(1)
        assert event.event == "project.updated"


async def _ends_within(stream: Any, seconds: float) -> float:
    started = time.monotonic()
    await stream.wait_ended(seconds)
    return time.monotonic() - started


async def test_revocations_end_the_stream(build_app: BuildApp) -> None:
    app = await build_app(events_recheck_seconds=0.3, rate_limit_enabled=False)
    async with client_for(app) as client:
        owner = await register(client)
        org = await create_org(client, owner)
        # logout-all
        member = await add_member(app, client, org, "member")
        async with open_stream(app, org.id, member.headers) as stream:
            await stream.next()
            out = await client.post("/api/v1/auth/logout-all", headers=member.headers)
            assert out.status_code == 204
            assert await _ends_within(stream, 5) < 5
        # membership removed
        member = await add_member(app, client, org, "member")
        async with open_stream(app, org.id, member.headers) as stream:
            await stream.next()
            gone = await client.delete(f"{org.path}/members/{member.id}", headers=owner.headers)
            assert gone.status_code == 204
            await stream.wait_ended(5)
        # key revoked
        key = await create_api_key(client, org, ["projects:read"])
        async with open_stream(app, org.id, api_key_headers(key)) as stream:
            await stream.next()
            listed = await client.get(f"{org.path}/api-keys", headers=owner.headers)
            key_id = next(k["id"] for k in listed.json()["data"] if key.startswith(k["prefix"]))
            revoked = await client.delete(f"{org.path}/api-keys/{key_id}", headers=owner.headers)
            assert revoked.status_code == 204
            await stream.wait_ended(5)
        # organization deleted (the owner's own stream)
        async with open_stream(app, org.id, owner.headers) as stream:
            await stream.next()
            deleted = await client.delete(org.path, headers=owner.headers)
            assert deleted.status_code == 204
            await stream.wait_ended(5)


async def test_a_stream_ends_within_15_seconds_of_logout_all_at_default_settings(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        await stream.next()
        assert (await client.post("/api/v1/auth/logout-all", headers=owner.headers)).status_code
        assert await _ends_within(stream, 15) < 15


async def test_a_quiet_stream_sends_pings(build_app: BuildApp) -> None:
    app = await build_app(events_ping_seconds=0.2, rate_limit_enabled=False)
    async with client_for(app) as client:
        owner = await register(client)
        org = await create_org(client, owner)
        async with open_stream(app, org.id, owner.headers) as stream:
            await stream.next()  # retry
            ping = await stream.next(2)
            assert ping is not None
            assert ping.comment == "ping"


async def test_stream_limits_per_user_and_per_organization(build_app: BuildApp) -> None:
    app = await build_app(
        events_max_streams_per_user=2, events_max_streams_per_org=3, rate_limit_enabled=False
    )
    async with client_for(app) as client:
        owner = await register(client)
        org = await create_org(client, owner)
        other = await add_member(app, client, org, "viewer")
        third = await add_member(app, client, org, "viewer")
        async with open_stream(app, org.id, owner.headers) as one:
            async with open_stream(app, org.id, owner.headers) as two:
                assert (one.status, two.status) == (200, 200)
                async with open_stream(app, org.id, owner.headers) as refused:
                    assert refused.status == 429
                    assert int(refused.headers["retry-after"]) >= 1
                    assert b'"code":"rate_limited"' in refused.body
                async with open_stream(app, org.id, other.headers) as three:
                    assert three.status == 200
                    async with open_stream(app, org.id, third.headers) as org_full:
                        assert org_full.status == 429
                        assert b"organization" in org_full.body
            # A closed stream gives its slot back.
            await asyncio.sleep(0.05)
            async with open_stream(app, org.id, owner.headers) as again:
                assert again.status == 200


async def test_a_browser_ticket_opens_the_stream_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    viewer = await add_member(app, client, org, "viewer")
    other_org = await create_org(client, owner)
    created = await client.post(f"{org.path}/events/tickets", headers=viewer.headers)
    assert created.status_code == 201, created.text
    body = created.json()["data"]
    assert body["expiresIn"] == 60
    assert len(body["ticket"]) >= 40
    async with open_stream(app, org.id, ticket=body["ticket"]) as stream:
        assert stream.status == 200
        await create_api_key(client, org, ["tasks:read"])  # not for a viewer
        await _project(client, org, "via ticket", owner)
        [event] = await stream.events(1)
        assert event.event == "project.created"  # the ticket carries the viewer's rights
    async with open_stream(app, org.id, ticket=body["ticket"]) as reused:
        assert reused.status == 401
        assert b'"code":"invalid_ticket"' in reused.body
    for_other = (await client.post(f"{org.path}/events/tickets", headers=owner.headers)).json()
    async with open_stream(app, other_org.id, ticket=for_other["data"]["ticket"]) as wrong:
        assert wrong.status == 401
    async with open_stream(app, org.id, ticket="x" * 43) as unknown:
        assert unknown.status == 401
    no_credentials = await client.post(f"{org.path}/events/tickets")
    assert no_credentials.status_code == 401
    stranger = await register(client)
    foreign = await client.post(f"{org.path}/events/tickets", headers=stranger.headers)
    assert foreign.status_code == 404


async def test_a_ticket_of_a_revoked_session_opens_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    ticket = (await client.post(f"{org.path}/events/tickets", headers=owner.headers)).json()
    assert (await client.post("/api/v1/auth/logout-all", headers=owner.headers)).status_code
    async with open_stream(app, org.id, ticket=ticket["data"]["ticket"]) as stream:
        assert stream.status == 401


async def test_an_open_stream_holds_no_database_connection(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    pool = services_of(app).database.engine.pool
    before = pool.checkedout()  # type: ignore[attr-defined]
    async with open_stream(app, org.id, owner.headers) as stream:
        await stream.next()
        await asyncio.sleep(0.1)
        assert pool.checkedout() == before  # type: ignore[attr-defined]


async def test_a_replay_overlapping_the_live_feed_yields_each_event_once() -> None:
    """An event committed while a subscriber is being replayed reaches it once, in order."""
    from tenantry.core.events import LocalEventBus

    org_id = uuid.uuid4()

    class Racing(LocalEventBus):
        async def _follow(self, org: uuid.UUID) -> None:
            # Committed after the subscription is registered, before its replay is read:
            # it is both queued live and part of the replay.
            await self.publish(org, [Outgoing("task.created", "tasks:read", {"n": "racing"})])

    bus = Racing(buffer_size=100, buffer_seconds=3600)
    await bus.publish(org_id, [Outgoing("task.created", "tasks:read", {"n": "first"})])
    first = bus._buffers[org_id].events[0].id
    async with bus.subscribe(org_id, f"{first[0]}-{first[1]}") as subscription:
        replayed = [orjson_loads(e.data)["n"] for e in subscription.take_replay()]
        await bus.publish(org_id, [Outgoing("task.created", "tasks:read", {"n": "live"})])
        live = []
        while (event := await subscription.next(0.1)) is not None:
            live.append(orjson_loads(event.data)["n"])
    assert replayed == ["racing"]
    assert live == ["live"]


def orjson_loads(data: bytes) -> Any:
    import orjson

    return orjson.loads(data)


async def test_an_expired_trial_still_streams(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Reads keep working after a trial ends: the stream, and the ticket that opens it."""
    import datetime as dt

    from tests.plans.conftest import end_trial_at

    owner = await register(client)
    org = await create_org(client, owner)
    from types import SimpleNamespace

    ended = SimpleNamespace(id=uuid.UUID(org.id))
    await end_trial_at(app, ended, dt.datetime.now(dt.UTC) - dt.timedelta(days=1))  # type: ignore[arg-type]
    refused = await client.post(f"{org.path}/projects", json={"name": "x"}, headers=owner.headers)
    assert refused.status_code == 402
    ticket = await client.post(f"{org.path}/events/tickets", headers=owner.headers)
    assert ticket.status_code == 201, ticket.text
    async with open_stream(app, org.id, ticket=ticket.json()["data"]["ticket"]) as stream:
        assert stream.status == 200


async def test_a_bulk_update_announces_each_task_with_its_new_version(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    project = await _project(client, org, "bulk", owner)
    tasks = []
    for i in range(3):
        created = await client.post(
            f"{org.path}/projects/{project}/tasks", json={"title": f"t{i}"}, headers=owner.headers
        )
        tasks.append(created.json()["data"]["id"])
    async with open_stream(app, org.id, owner.headers) as stream:
        bulk = await client.patch(
            f"{org.path}/tasks/bulk",
            json={"ids": tasks, "changes": {"priority": "urgent"}},
            headers=owner.headers,
        )
        assert bulk.status_code == 200, bulk.text
        frames = await stream.events(3)
    assert [(f.event, f.data["entityId"], f.data["version"]) for f in frames] == [
        ("task.updated", task, 2) for task in tasks
    ]


def test_each_entity_type_maps_to_the_permission_that_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tenantry.modules.audit import service as audit

    assert audit.read_permission("task.updated", "task") == "tasks:read"
    assert audit.read_permission("member.added", "membership") == "members:read"
    assert audit.read_permission("api_key.created", "api_key") == "api_keys:manage"
    assert audit.read_permission("organization.updated", "organization") == "org:read"
    assert audit.read_permission("organization.subscription_changed", "organization") == (
        "billing:read"
    )
    assert audit.read_permission("thing.made", "thing") == "audit:read"  # nobody mapped it
    monkeypatch.setattr(audit, "RESOURCES", ("invoices", "categories", "boxes"))
    assert audit.read_permission("invoice.created", "invoice") == "invoices:read"
    assert audit.read_permission("category.created", "category") == "categories:read"
    assert audit.read_permission("box.created", "box") == "boxes:read"


async def test_a_role_change_applies_to_an_open_stream(build_app: BuildApp) -> None:
    app = await build_app(events_recheck_seconds=0.3, rate_limit_enabled=False)
    async with client_for(app) as client:
        owner = await register(client)
        org = await create_org(client, owner)
        billing = await add_member(app, client, org, "billing")  # no projects:read
        async with open_stream(app, org.id, billing.headers) as stream:
            await _project(client, org, "unseen", owner)
            assert await stream.quiet(0.5) == []
            promoted = await client.patch(
                f"{org.path}/members/{billing.id}", json={"role": "viewer"}, headers=owner.headers
            )
            assert promoted.status_code == 200, promoted.text
            await asyncio.sleep(1)  # the next check of the stream
            await _project(client, org, "seen", owner)
            received = await stream.quiet(0.5)
        assert [f.data["changes"]["name"][1] for f in received if f.event == "project.created"] == [
            "seen"
        ]


async def test_an_external_principal_is_confirmed_against_its_account(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A stream opened with an external provider's token has no local session: the check
    asks the account (logout-all since the token was issued, deactivation) instead."""
    from tenantry.core.authz import Principal
    from tenantry.core.errors import Unauthorized

    owner = await register(client)
    org = await create_org(client, owner)
    services = services_of(app)
    principal = Principal(user_id=uuid.UUID(owner.id), issued_at=time.time() - 1)

    async def confirm() -> TenantContext:
        async with services.database.session(write=False) as session:
            bind_tenant(session, TenantContext(organization_id=uuid.UUID(org.id)))
            return await services.gate.confirm(session, uuid.UUID(org.id), principal)

    assert (await confirm()).role == "owner"
    assert (await client.post("/api/v1/auth/logout-all", headers=owner.headers)).status_code
    with pytest.raises(Unauthorized):
        await confirm()
