"""Upload and download through HTTP: round trip, detected types, names, headers, limits."""

from __future__ import annotations

import urllib.parse

import httpx
import pytest

from tests.files.conftest import NewTenant
from tests.files.samples import CSV, GIF, JPEG, JSON, PDF, PNG, TEXT, WEBP, ZIP, sha256


async def upload(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    data: bytes,
    *,
    filename: str = "upload.bin",
    declared: str = "application/octet-stream",
) -> httpx.Response:
    return await http.post(url, files={"file": (filename, data, declared)}, headers=headers)


async def test_upload_then_download_returns_the_same_bytes_and_sha256(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    created = await upload(http, org.files, org.owner, PNG, filename="photo.png")
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert set(data) == {"id", "filename", "contentType", "size", "sha256", "createdAt"}
    assert data["filename"] == "photo.png"
    assert data["contentType"] == "image/png"
    assert data["size"] == len(PNG)
    assert data["sha256"] == sha256(PNG)
    assert data["createdAt"].endswith("Z")

    downloaded = await http.get(f"{org.files}/{data['id']}/download", headers=org.owner)
    assert downloaded.status_code == 200
    assert downloaded.content == PNG
    assert sha256(downloaded.content) == data["sha256"]


@pytest.mark.parametrize(
    ("content", "declared", "filename", "detected"),
    [
        (PNG, "application/octet-stream", "a.bin", "image/png"),
        (JPEG, "image/png", "a.png", "image/jpeg"),  # the declared type is not trusted
        (GIF, "image/gif", "a.gif", "image/gif"),
        (WEBP, "image/webp", "a.webp", "image/webp"),
        (PDF, "application/pdf", "a.pdf", "application/pdf"),
        (ZIP, "application/zip", "a.zip", "application/zip"),
        (TEXT, "text/plain", "a.txt", "text/plain"),
        (CSV, "text/csv", "a.csv", "text/csv"),
        (CSV, "application/octet-stream", "a.csv", "text/csv"),
        (JSON, "application/json", "a.json", "application/json"),
        (TEXT, "application/json", "a.json", "text/plain"),  # not JSON-shaped
        (TEXT, "image/png", "a.png", "text/plain"),
    ],
)
async def test_the_content_type_is_detected_from_the_bytes(
    http: httpx.AsyncClient,
    new_tenant: NewTenant,
    content: bytes,
    declared: str,
    filename: str,
    detected: str,
) -> None:
    org = await new_tenant()
    response = await upload(
        http, org.files, org.owner, content, filename=filename, declared=declared
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["contentType"] == detected


async def test_download_is_an_attachment_with_the_stored_type_and_nosniff(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    created = await upload(http, org.files, org.owner, TEXT, filename="notes.txt")
    file_id = created.json()["data"]["id"]
    response = await http.get(f"{org.files}/{file_id}/download", headers=org.owner)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    )
    assert response.headers["content-length"] == str(len(TEXT))
    assert response.content == TEXT


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.txt", "evil.txt"),
        ("C:\\fakepath\\report.txt", "report.txt"),
        ('say "hi"; rm -rf.txt', 'say "hi"; rm -rf.txt'),
        ("résumé 2026 ✓.txt", "résumé 2026 ✓.txt"),
        ("line\r\nX-Injected: 1.txt", "lineX-Injected: 1.txt"),
        ("..", "file"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
    ],
)
async def test_a_client_filename_is_only_a_display_name(
    http: httpx.AsyncClient, new_tenant: NewTenant, sent: str, shown: str
) -> None:
    org = await new_tenant()
    created = await upload(http, org.files, org.owner, TEXT, filename=sent, declared="text/plain")
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["filename"] == shown
    # The object's key is the server's: orgs/<org>/files/<uuid7 hex>, nothing of the name.
    keys = await org.stored_keys()
    assert len(keys) == 1
    prefix, name = keys[0].rsplit("/", 1)
    assert prefix == f"orgs/{org.id}/files"
    assert len(name) == 32
    assert all(c in "0123456789abcdef" for c in name)

    response = await http.get(f"{org.files}/{data['id']}/download", headers=org.owner)
    disposition = response.headers["content-disposition"]
    assert "\r" not in disposition
    assert "\n" not in disposition
    disposition.encode("ascii")  # header stays ASCII; the exact name is in filename*
    fallback = disposition.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert '"' not in fallback
    assert "\\" not in fallback
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(encoded) == shown


async def test_get_returns_the_metadata_with_an_etag(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    created = (await upload(http, org.files, org.owner, PDF, filename="a.pdf")).json()["data"]
    response = await http.get(f"{org.files}/{created['id']}", headers=org.owner)
    assert response.status_code == 200
    data = response.json()["data"]
    assert {k: data[k] for k in created} == created
    assert data["organizationId"] == org.id
    assert data["version"] == 1
    assert response.headers["etag"] == '"1"'
    assert "storageKey" not in data


async def test_an_unknown_or_malformed_file_id_is_404_or_400(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    missing = await http.get(f"{org.files}/0190a8f0-0000-7000-8000-000000000000", headers=org.owner)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    malformed = await http.get(f"{org.files}/not-a-uuid/download", headers=org.owner)
    assert malformed.status_code == 400
