"""Uploads and deletes write audit entries in their own transaction (none for a refused upload)."""

from __future__ import annotations

import httpx

from tests.files.conftest import NewTenant
from tests.files.samples import EXE, PNG, sha256
from tests.files.test_upload_download import upload


async def test_upload_and_delete_are_audited_and_a_refused_upload_is_not(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    member = await org.member("member")
    created = await upload(http, org.files, member, PNG, filename="audited.png")
    file_id = created.json()["data"]["id"]
    refused = await upload(http, org.files, member, EXE, declared="image/png")
    assert refused.status_code == 415
    assert (await http.delete(f"{org.files}/{file_id}", headers=member)).status_code == 204

    log = await http.get(f"{org.path}/audit-logs?entityType=file", headers=org.owner)
    assert log.status_code == 200
    entries = sorted(log.json()["data"], key=lambda e: e["createdAt"])
    assert [e["action"] for e in entries] == ["file.created", "file.deleted"]
    assert {e["entityId"] for e in entries} == {file_id}
    me = (await http.get("/api/v1/users/me", headers=member)).json()["data"]["id"]
    assert {e["actorUserId"] for e in entries} == {me}
    assert entries[0]["changes"]["sha256"] == [None, sha256(PNG)]
    assert entries[0]["changes"]["filename"] == [None, "audited.png"]
    assert entries[1]["changes"]["size"] == [len(PNG), None]
