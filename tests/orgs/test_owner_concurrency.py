"""Never zero owners, also when two demotions race (PostgreSQL: real concurrent requests)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from tests.factories import add_member, create_org, register


@pytest.mark.services
async def test_two_concurrent_demotions_of_the_last_two_owners_leave_one_owner(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for _ in range(5):
        first = await register(client)
        org = await create_org(client, first)
        second = await add_member(app, client, org, "owner")
        results = await asyncio.gather(
            client.patch(
                f"{org.path}/members/{first.id}", json={"role": "admin"}, headers=first.headers
            ),
            client.patch(
                f"{org.path}/members/{second.id}", json={"role": "admin"}, headers=second.headers
            ),
        )
        assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
        members = await client.get(f"{org.path}/members?limit=100", headers=first.headers)
        if members.status_code == 404:  # `first` was the one demoted... to admin: still a member
            pytest.fail("a demoted owner lost membership")
        owners = [m for m in members.json()["data"] if m["role"] == "owner"]
        assert len(owners) == 1
