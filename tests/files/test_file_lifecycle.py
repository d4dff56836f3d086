"""Listing, deleting, usage, roles and isolation of files, through HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.files.conftest import NewTenant, Tenant
from tests.files.samples import CSV, JSON, PDF, PNG, TEXT
from tests.files.test_upload_download import upload


async def upload_ok(
    http: httpx.AsyncClient, org: Tenant, data: bytes, filename: str, headers: dict[str, str]
) -> dict[str, str]:
    response = await upload(http, org.files, headers, data, filename=filename)
    assert response.status_code == 201, response.text
    data_out: dict[str, str] = response.json()["data"]
    return data_out


async def test_list_pages_sorts_and_searches_by_filename(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    names = ["Budget 2026.csv", "budget-notes.txt", "photo.png", "report.pdf", "data.json"]
    contents = [CSV, TEXT, PNG, PDF, JSON]
    for name, content in zip(names, contents, strict=True):
        await upload_ok(http, org, content, name, org.owner)

    first = await http.get(f"{org.files}?limit=2", headers=org.owner)
    assert first.status_code == 200
    meta = first.json()["meta"]
    assert (meta["total"], meta["totalPages"], meta["hasNextPage"]) == (5, 3, True)
    assert [f["filename"] for f in first.json()["data"]] == ["data.json", "report.pdf"]

    by_name = await http.get(f"{org.files}?sortBy=filename&sortOrder=asc", headers=org.owner)
    assert [f["filename"] for f in by_name.json()["data"]] == sorted(names)

    by_size = await http.get(f"{org.files}?sortBy=size", headers=org.owner)
    sizes = [f["size"] for f in by_size.json()["data"]]
    assert sizes == sorted(sizes, reverse=True)

    search = await http.get(f"{org.files}?search=BUDGET", headers=org.owner)
    assert sorted(f["filename"] for f in search.json()["data"]) == names[:2]
    assert search.json()["meta"]["total"] == 2
    literal = await http.get(f"{org.files}?search=%25", headers=org.owner)
    assert literal.json()["data"] == []  # `%` is a character, not a wildcard


async def test_list_rejects_an_unknown_sort_field(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    response = await http.get(f"{org.files}?sortBy=storageKey", headers=org.owner)
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "sortBy"


async def test_cursor_pages_return_every_file_exactly_once(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    ids = {(await upload_ok(http, org, TEXT, f"f{i}.txt", org.owner))["id"] for i in range(5)}
    seen: list[str] = []
    cursor = ""
    while True:
        response = await http.get(f"{org.files}?limit=2&cursor={cursor}", headers=org.owner)
        assert response.status_code == 200
        body = response.json()
        seen += [f["id"] for f in body["data"]]
        assert "total" not in body["meta"]
        if not body["meta"]["hasNextPage"]:
            break
        cursor = body["meta"]["nextCursor"]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5
    tampered = await http.get(f"{org.files}?cursor=bm90LWEtY3Vyc29y", headers=org.owner)
    assert tampered.status_code == 400


async def test_ascending_cursor_pages_follow_upload_order_and_need_created_at_sort(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    ids = [(await upload_ok(http, org, TEXT, f"a{i}.txt", org.owner))["id"] for i in range(3)]
    first = await http.get(f"{org.files}?limit=2&sortOrder=asc&cursor=", headers=org.owner)
    cursor = first.json()["meta"]["nextCursor"]
    second = await http.get(f"{org.files}?limit=2&sortOrder=asc&cursor={cursor}", headers=org.owner)
    assert [f["id"] for f in first.json()["data"] + second.json()["data"]] == ids
    assert second.json()["meta"]["hasNextPage"] is False
    by_size = await http.get(f"{org.files}?sortBy=size&cursor=", headers=org.owner)
    assert by_size.status_code == 400
    assert by_size.json()["details"][0]["field"] == "cursor"


async def test_delete_hides_the_file_everywhere_and_frees_its_bytes(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    kept = await upload_ok(http, org, PNG, "kept.png", org.owner)
    doomed = await upload_ok(http, org, PDF, "doomed.pdf", org.owner)
    assert await org.usage() == (len(PNG) + len(PDF), 2)
    assert len(await org.stored_keys()) == 2

    deleted = await http.delete(f"{org.files}/{doomed['id']}", headers=org.owner)
    assert deleted.status_code == 204
    assert deleted.content == b""
    for url in (f"{org.files}/{doomed['id']}", f"{org.files}/{doomed['id']}/download"):
        gone = await http.get(url, headers=org.owner)
        assert gone.status_code == 404
        assert gone.json()["code"] == "not_found"
    again = await http.delete(f"{org.files}/{doomed['id']}", headers=org.owner)
    assert again.status_code == 404
    listed = await http.get(org.files, headers=org.owner)
    assert [f["id"] for f in listed.json()["data"]] == [kept["id"]]
    assert await org.usage() == (len(PNG), 1)
    assert len(await org.stored_keys()) == 1  # the bytes are gone, the row stays as a tombstone


async def test_usage_counts_every_upload_of_the_organization_only(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org, other = await new_tenant(), await new_tenant()
    for data in (PNG, TEXT, CSV):
        await upload_ok(http, org, data, "x", org.owner)
    await upload_ok(http, other, PDF, "y.pdf", other.owner)
    assert await org.usage() == (len(PNG) + len(TEXT) + len(CSV), 3)
    assert await other.usage() == (len(PDF), 1)


async def test_a_viewer_reads_but_cannot_upload_or_delete(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    viewer = await org.member("viewer")
    file = await upload_ok(http, org, PNG, "a.png", org.owner)
    refused = await upload(http, org.files, viewer, PNG)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert (await http.get(f"{org.files}/{file['id']}/download", headers=viewer)).content == PNG
    assert (await http.delete(f"{org.files}/{file['id']}", headers=viewer)).status_code == 403
    assert await org.usage() == (len(PNG), 1)


async def test_a_member_deletes_own_uploads_only_and_a_manager_any(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    member, manager = await org.member("member"), await org.member("manager")
    mine = await upload_ok(http, org, TEXT, "mine.txt", member)
    theirs = await upload_ok(http, org, TEXT, "theirs.txt", org.owner)

    refused = await http.delete(f"{org.files}/{theirs['id']}", headers=member)
    assert refused.status_code == 403
    assert (await http.get(f"{org.files}/{theirs['id']}", headers=member)).status_code == 200
    assert (await http.delete(f"{org.files}/{mine['id']}", headers=member)).status_code == 204
    assert (await http.delete(f"{org.files}/{theirs['id']}", headers=manager)).status_code == 204
    assert await org.usage() == (0, 0)


async def test_billing_cannot_see_files(http: httpx.AsyncClient, new_tenant: NewTenant) -> None:
    org = await new_tenant()
    billing = await org.member("billing")
    file = await upload_ok(http, org, TEXT, "a.txt", org.owner)
    for url in (org.files, f"{org.files}/{file['id']}", f"{org.files}/{file['id']}/download"):
        assert (await http.get(url, headers=billing)).status_code == 403


@pytest.mark.parametrize("method", ["GET", "DOWNLOAD", "DELETE", "LIST", "UPLOAD"])
async def test_another_organizations_member_gets_404(
    http: httpx.AsyncClient, new_tenant: NewTenant, method: str
) -> None:
    org, other = await new_tenant(), await new_tenant()
    file = await upload_ok(http, org, PNG, "secret.png", org.owner)
    outsider = other.owner
    under_a = f"{org.files}/{file['id']}"
    under_b = f"{other.files}/{file['id']}"
    if method == "LIST":
        calls = [http.get(org.files, headers=outsider)]
    elif method == "UPLOAD":
        calls = [upload(http, org.files, outsider, PNG)]
    else:
        verb = "DELETE" if method == "DELETE" else "GET"
        suffix = "/download" if method == "DOWNLOAD" else ""
        calls = [
            http.request(verb, under_a + suffix, headers=outsider),
            http.request(verb, under_b + suffix, headers=outsider),  # A's id under B's path
        ]
    for call in calls:
        response = await call
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    assert (await http.get(under_a, headers=org.owner)).status_code == 200
    assert await org.usage() == (len(PNG), 1)
    listed = await http.get(other.files, headers=outsider)
    assert listed.json()["data"] == []


async def test_two_concurrent_deletes_free_the_bytes_once(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    file = await upload_ok(http, org, PDF, "twice.pdf", org.owner)
    kept = await upload_ok(http, org, PNG, "kept.png", org.owner)
    url = f"{org.files}/{file['id']}"
    first, second = await asyncio.gather(
        http.delete(url, headers=org.owner), http.delete(url, headers=org.owner)
    )
    assert sorted([first.status_code, second.status_code]) == [204, 404]
    assert await org.usage() == (len(PNG), 1)
    assert (await http.get(f"{org.files}/{kept['id']}", headers=org.owner)).status_code == 200
