"""Project lists: filters, search, sort allow-list, offset and cursor pages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tenant_helpers import Org, Tenants


async def _ids(tenants: Tenants, org: Org, query: str) -> list[str]:
    response = await tenants.client.get(org.url(f"/projects?{query}"), headers=org.owner.headers)
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["data"]]


async def test_status_filter_and_case_insensitive_search(tenants: Tenants) -> None:
    org = await tenants.org()
    alpha = await org.project(name="Alpha Launch")
    beta = await org.project(name="beta", description="The LAUNCH pad", status="archived")
    await org.project(name="Gamma")
    assert set(await _ids(tenants, org, "search=launch")) == {alpha["id"], beta["id"]}
    assert await _ids(tenants, org, "search=launch&status=archived") == [beta["id"]]
    assert await _ids(tenants, org, "search=100%25") == []  # `%` is a literal, not a wildcard


async def test_sort_by_name_both_ways_and_unknown_sort_is_400(tenants: Tenants) -> None:
    org = await tenants.org()
    names = ["delta", "alpha", "charlie", "bravo"]
    by_name = {(await org.project(name=n))["id"]: n for n in names}
    asc = await _ids(tenants, org, "sortBy=name&sortOrder=asc")
    assert [by_name[i] for i in asc] == sorted(names)
    desc = await _ids(tenants, org, "sortBy=name&sortOrder=desc")
    assert [by_name[i] for i in desc] == sorted(names, reverse=True)
    for bad in (
        "sortBy=description",
        "sortBy=organizationId",
        "sortOrder=up",
        "limit=101",
        "page=0",
    ):
        response = await tenants.client.get(org.url(f"/projects?{bad}"), headers=org.owner.headers)
        assert response.status_code == 400, bad


async def test_default_order_is_newest_first_with_offset_meta(tenants: Tenants) -> None:
    org = await tenants.org()
    created = [(await org.project())["id"] for _ in range(5)]
    response = await tenants.client.get(
        org.url("/projects?limit=2&page=2"), headers=org.owner.headers
    )
    body = response.json()
    assert [p["id"] for p in body["data"]] == list(reversed(created))[2:4]
    assert body["meta"] == {
        "total": 5,
        "page": 2,
        "limit": 2,
        "totalPages": 3,
        "hasNextPage": True,
        "hasPrevPage": True,
    }


async def _walk(tenants: Tenants, org: Org, query: str) -> list[str]:
    seen: list[str] = []
    cursor = ""
    for _ in range(50):
        response = await tenants.client.get(
            org.url("/projects"),
            params={"cursor": cursor, "limit": 3, **_params(query)},
            headers=org.owner.headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body["meta"]) == {"limit", "nextCursor", "hasNextPage"}
        seen += [p["id"] for p in body["data"]]
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ended")


def _params(query: str) -> dict[str, Any]:
    return dict(part.split("=", 1) for part in query.split("&") if part)


@pytest.mark.parametrize(
    "query",
    ["", "sortOrder=asc", "sortBy=name&sortOrder=asc", "sortBy=name", "sortBy=updatedAt"],
)
async def test_cursor_pages_return_every_row_exactly_once(tenants: Tenants, query: str) -> None:
    org = await tenants.org()
    # Duplicate names: the id breaks ties, so no row is skipped or repeated.
    ids = [(await org.project(name=f"same {i % 3}"))["id"] for i in range(10)]
    seen = await _walk(tenants, org, query)
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    offset = await _ids(tenants, org, f"limit=100&{query}")
    assert seen == offset  # same order as the offset listing


async def test_cursor_pages_stay_correct_while_rows_are_added(tenants: Tenants) -> None:
    org = await tenants.org()
    ids = [(await org.project())["id"] for _ in range(6)]
    first = await tenants.client.get(
        org.url("/projects"), params={"cursor": "", "limit": 3}, headers=org.owner.headers
    )
    page_one = [p["id"] for p in first.json()["data"]]
    await org.project()  # newer than everything: belongs before page one, never inside page two
    second = await tenants.client.get(
        org.url("/projects"),
        params={"cursor": first.json()["meta"]["nextCursor"], "limit": 3},
        headers=org.owner.headers,
    )
    page_two = [p["id"] for p in second.json()["data"]]
    assert page_one + page_two == list(reversed(ids))


async def test_tampered_or_foreign_cursor_is_400(tenants: Tenants) -> None:
    org = await tenants.org()
    for _ in range(3):
        await org.project()
    first = await tenants.client.get(
        org.url("/projects"), params={"cursor": "", "limit": 1}, headers=org.owner.headers
    )
    cursor = first.json()["meta"]["nextCursor"]
    for params in (
        {"cursor": "garbage!!"},
        {"cursor": cursor, "sortBy": "name"},  # a cursor of another sort order
        {"cursor": cursor, "sortOrder": "asc"},
    ):
        response = await tenants.client.get(
            org.url("/projects"), params=params, headers=org.owner.headers
        )
        assert response.status_code == 400, params
