"""Optimistic concurrency on projects: ETag, If-Match (412), version (409), real races."""

from __future__ import annotations

import asyncio

import pytest

from tests.tenant_helpers import Tenants


async def test_stale_if_match_is_412_and_changes_nothing(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project(name="before")
    url, headers = org.url(f"/projects/{project['id']}"), org.owner.headers
    ok = await tenants.client.patch(
        url, json={"name": "one"}, headers={**headers, "If-Match": '"1"'}
    )
    assert ok.status_code == 200
    assert ok.headers["etag"] == '"2"'
    stale = await tenants.client.patch(
        url, json={"name": "two"}, headers={**headers, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["code"] == "precondition_failed"
    weak = await tenants.client.patch(
        url, json={"name": "two"}, headers={**headers, "If-Match": 'W/"2"'}
    )
    assert weak.status_code == 412  # If-Match compares strongly
    assert (await tenants.client.get(url, headers=headers)).json()["data"]["name"] == "one"
    star = await tenants.client.patch(
        url, json={"name": "three"}, headers={**headers, "If-Match": "*"}
    )
    assert star.status_code == 200


async def test_stale_version_in_body_is_409_version_conflict(tenants: Tenants) -> None:
    org = await tenants.org()
    project = await org.project(name="before")
    url, headers = org.url(f"/projects/{project['id']}"), org.owner.headers
    first = await tenants.client.patch(url, json={"name": "one", "version": 1}, headers=headers)
    assert first.status_code == 200
    second = await tenants.client.patch(url, json={"name": "two", "version": 1}, headers=headers)
    assert second.status_code == 409
    assert second.json()["code"] == "version_conflict"
    assert (await tenants.client.get(url, headers=headers)).json()["data"]["name"] == "one"


@pytest.mark.services
async def test_concurrent_patches_with_the_same_version_exactly_one_wins(tenants: Tenants) -> None:
    org = await tenants.org()
    for _round in range(5):
        project = await org.project()
        url, headers = org.url(f"/projects/{project['id']}"), org.owner.headers
        responses = await asyncio.gather(
            *(
                tenants.client.patch(
                    url, json={"name": f"writer {i}", "version": 1}, headers=headers
                )
                for i in range(4)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 409, 409, 409], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200).json()["data"]
        current = (await tenants.client.get(url, headers=headers)).json()["data"]
        assert (current["name"], current["version"]) == (winner["name"], 2)
