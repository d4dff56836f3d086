"""What an upload may not be: too large, a disguised type, not multipart — and that a refused
or failed upload leaves nothing behind (no row, no object, no usage)."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session

from tenantry.modules.files.models import StoredFile
from tests.conftest import client_for
from tests.files.conftest import NewTenant, Tenant, make_tenant, start_files_app
from tests.files.samples import ELF, EXE, HTML, PNG, SVG, TEXT
from tests.files.test_upload_download import upload

LIMIT = 64 * 1024


async def assert_nothing_stored(http: httpx.AsyncClient, org: Tenant) -> None:
    listed = await http.get(org.files, headers=org.owner)
    assert listed.json()["meta"]["total"] == 0
    assert await org.stored_keys() == []
    assert await org.usage() == (0, 0)


@pytest.fixture(scope="module")
async def small_app(make_settings: Callable[..., Any]) -> AsyncIterator[FastAPI]:
    settings = make_settings(rate_limit_enabled=False, max_upload_bytes=LIMIT)
    async for application in start_files_app(settings):
        yield application


@pytest.fixture
async def small(small_app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant]]:
    async with client_for(small_app) as client:
        yield client, await make_tenant(small_app, client)


def multipart(data: bytes, filename: str = "big.png", boundary: str = "b0undary") -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


MULTIPART = {"content-type": "multipart/form-data; boundary=b0undary"}


async def test_a_file_at_the_limit_is_accepted(
    small: tuple[httpx.AsyncClient, Tenant],
) -> None:
    http, org = small
    data = PNG[:16] + os.urandom(LIMIT - 16)
    response = await upload(http, org.files, org.owner, data)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["size"] == LIMIT


async def test_a_declared_content_length_over_the_limit_is_413_before_reading(
    small: tuple[httpx.AsyncClient, Tenant],
) -> None:
    http, org = small
    body = multipart(PNG[:16] + os.urandom(LIMIT * 3))
    response = await http.post(org.files, content=body, headers={**org.owner, **MULTIPART})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    await assert_nothing_stored(http, org)


async def test_a_file_just_over_the_limit_is_413_and_nothing_is_kept(
    small: tuple[httpx.AsyncClient, Tenant],
) -> None:
    # Within the multipart allowance of the body limit: the upload itself must catch it.
    http, org = small
    response = await upload(http, org.files, org.owner, PNG[:16] + os.urandom(LIMIT - 15))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    await assert_nothing_stored(http, org)


@pytest.mark.parametrize("oversize", [LIMIT + 1, LIMIT * 4])
async def test_a_streamed_upload_without_content_length_over_the_limit_is_413(
    small: tuple[httpx.AsyncClient, Tenant], oversize: int
) -> None:
    http, org = small
    body = multipart(PNG[:16] + os.urandom(oversize - 16))

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await http.post(org.files, content=chunked(), headers={**org.owner, **MULTIPART})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    await assert_nothing_stored(http, org)


@pytest.mark.parametrize(
    ("content", "declared", "filename"),
    [
        (HTML, "text/plain", "notes.txt"),
        (b"  \n<html><body>hi</body></html>", "text/csv", "data.csv"),
        (SVG, "image/png", "logo.png"),
        (b'<?xml version="1.0"?><a/>', "application/json", "a.json"),
        (EXE, "image/png", "cat.png"),
        (ELF, "application/pdf", "doc.pdf"),
        (b"#!/bin/sh\nrm -rf /\n", "text/plain", "run.txt"),
        (b"\x00\x01\x02binary" * 50, "text/plain", "a.txt"),
    ],
)
async def test_a_disguised_file_with_an_allowed_declared_type_is_415(
    http: httpx.AsyncClient, new_tenant: NewTenant, content: bytes, declared: str, filename: str
) -> None:
    org = await new_tenant()
    response = await upload(
        http, org.files, org.owner, content, filename=filename, declared=declared
    )
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    await assert_nothing_stored(http, org)


async def test_text_that_turns_binary_after_the_sniffed_head_is_415_and_not_kept(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    content = TEXT * 2000 + EXE
    response = await upload(http, org.files, org.owner, content, filename="a.txt")
    assert response.status_code == 415
    await assert_nothing_stored(http, org)


async def test_a_non_multipart_body_is_415(http: httpx.AsyncClient, new_tenant: NewTenant) -> None:
    org = await new_tenant()
    as_json = await http.post(org.files, json={"file": "aGVsbG8="}, headers=org.owner)
    assert as_json.status_code == 415
    assert as_json.json()["code"] == "unsupported_media_type"
    raw = await http.post(
        org.files, content=PNG, headers={**org.owner, "content-type": "image/png"}
    )
    assert raw.status_code == 415
    await assert_nothing_stored(http, org)


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (
        f'; filename="{filename}"' if filename is not None else ""
    )
    return f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


END = b"--b0undary--\r\n"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (part("other", PNG, "a.png") + END, "Unknown form field"),
        (part("file", b"just a string") + END, "must be a file"),
        (part("file", b"", "empty.txt") + END, "empty"),
        (part("file", PNG, "a.png") + part("note", b"x") + END, "Unknown form field"),
        (part("file", PNG, "a.png") + part("file", PNG, "b.png") + END, "one file"),
        (END, "no `file` part"),
    ],
)
async def test_a_form_without_exactly_one_file_part_is_400(
    http: httpx.AsyncClient, new_tenant: NewTenant, body: bytes, problem: str
) -> None:
    org = await new_tenant()
    response = await http.post(org.files, content=body, headers={**org.owner, **MULTIPART})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_error"
    assert problem in response.json()["details"][0]["message"]
    await assert_nothing_stored(http, org)


async def test_a_truncated_multipart_body_is_400_and_nothing_is_kept(
    http: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    org = await new_tenant()
    body = multipart(PNG)[:-30]
    response = await http.post(org.files, content=body, headers={**org.owner, **MULTIPART})
    assert response.status_code == 400
    await assert_nothing_stored(http, org)


def faults_for(org: Tenant, stage: str) -> list[tuple[str, Callable[..., None]]]:
    """Session listeners that fail `org`'s upload at its flush, or at the commit after it."""

    def mine(session: Session) -> bool:
        return any(
            isinstance(obj, StoredFile) and str(obj.organization_id) == org.id
            for obj in session.new
        )

    def at_flush(session: Session, _context: Any, _instances: Any) -> None:
        if mine(session):
            raise RuntimeError("database fault injected by the test")

    def remember(session: Session, _context: Any, _instances: Any) -> None:
        if mine(session):
            session.info["fail_commit"] = True

    def at_commit(session: Session) -> None:
        if session.info.pop("fail_commit", False):
            raise RuntimeError("database fault injected by the test")

    if stage == "flush":
        return [("before_flush", at_flush)]
    return [("before_flush", remember), ("before_commit", at_commit)]


@pytest.mark.parametrize("stage", ["flush", "commit"])
async def test_an_upload_whose_transaction_fails_leaves_no_object_behind(
    http: httpx.AsyncClient, new_tenant: NewTenant, stage: str
) -> None:
    """The object is written before the row; the rollback (or failed commit) deletes it."""
    org = await new_tenant()
    faults = faults_for(org, stage)
    for name, listener in faults:
        event.listen(Session, name, listener)
    try:
        response = await upload(http, org.files, org.owner, PNG, filename="doomed.png")
    finally:
        for name, listener in faults:
            event.remove(Session, name, listener)
    assert response.status_code == 500
    assert "injected" not in response.text
    await assert_nothing_stored(http, org)
    again = await upload(http, org.files, org.owner, PNG, filename="fine.png")
    assert again.status_code == 201
    assert len(await org.stored_keys()) == 1


async def test_the_allow_list_setting_decides_which_detected_types_are_kept(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(
        rate_limit_enabled=False, upload_allowed_types="image/png,application/octet-stream"
    )
    async for application in start_files_app(settings):
        async with client_for(application) as http:
            org = await make_tenant(application, http)
            assert (await upload(http, org.files, org.owner, PNG)).status_code == 201
            blob = await upload(http, org.files, org.owner, b"\x00\x01" * 100)
            assert blob.status_code == 201
            assert blob.json()["data"]["contentType"] == "application/octet-stream"
            refused = await upload(http, org.files, org.owner, TEXT, declared="text/plain")
            assert refused.status_code == 415
            assert await org.usage() == (len(PNG) + 200, 2)


async def test_a_large_upload_streams_through_without_being_held_in_memory(
    make_settings: Callable[..., Any],
) -> None:
    size = 24 * 1024 * 1024
    settings = make_settings(rate_limit_enabled=False, max_upload_bytes=size)
    block = os.urandom(64 * 1024)
    head = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n\r\n'

    async def generated() -> AsyncIterator[bytes]:
        yield head + b"PK\x03\x04"
        for _ in range(size // len(block) - 1):
            yield block
        yield block[:-4] + b"\r\n--b0undary--\r\n"

    async for application in start_files_app(settings):
        async with client_for(application) as http:
            org = await make_tenant(application, http)
            tracemalloc.start()
            try:
                response = await http.post(
                    org.files, content=generated(), headers={**org.owner, **MULTIPART}
                )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert response.status_code == 201, response.text
            assert response.json()["data"]["size"] == size
            assert peak < size // 4, f"peak Python allocations {peak} bytes"
