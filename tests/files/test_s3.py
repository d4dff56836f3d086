"""The upload rules with storage on S3 (moto's server on 127.0.0.1), under make test-services."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session

from tenantry.modules.files.models import StoredFile
from tests.backends.test_storage import BUCKET, moto_endpoint  # noqa: F401 (fixture)
from tests.conftest import client_for
from tests.files.conftest import make_tenant, start_files_app
from tests.files.samples import EXE, PNG, sha256
from tests.files.test_upload_download import upload

pytestmark = pytest.mark.services

LIMIT = 6 * 1024 * 1024  # above the 5 MiB part size: multipart uploads to S3 happen


@pytest.fixture(scope="module")
async def s3_app(
    make_settings: Callable[..., Any],
    moto_endpoint: str,  # noqa: F811
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        rate_limit_enabled=False,
        max_upload_bytes=LIMIT,
        storage_url=f"s3://{BUCKET}/files-{uuid.uuid4().hex[:8]}?endpoint={moto_endpoint}"
        "&region=us-east-1",
        storage_access_key_id="test",
        storage_secret_access_key="test",
    )
    async for application in start_files_app(settings):
        yield application


async def test_an_s3_backed_upload_round_trips_and_refusals_leave_no_object(
    s3_app: FastAPI,
) -> None:
    async with client_for(s3_app) as http:
        org = await make_tenant(s3_app, http)
        data = PNG[:16] + os.urandom(LIMIT - 16)
        created = await upload(http, org.files, org.owner, data, filename="big.png")
        assert created.status_code == 201, created.text
        assert created.json()["data"]["sha256"] == sha256(data)
        file_id = created.json()["data"]["id"]
        downloaded = await http.get(f"{org.files}/{file_id}/download", headers=org.owner)
        assert downloaded.content == data

        too_big = await upload(http, org.files, org.owner, data + b"x")
        assert too_big.status_code == 413
        disguised = await upload(http, org.files, org.owner, EXE, declared="image/png")
        assert disguised.status_code == 415
        assert len(await org.stored_keys()) == 1

        assert (await http.delete(f"{org.files}/{file_id}", headers=org.owner)).status_code == 204
        assert await org.stored_keys() == []
        assert await org.usage() == (0, 0)


async def test_an_s3_backed_upload_whose_transaction_fails_leaves_no_object(
    s3_app: FastAPI,
) -> None:
    async with client_for(s3_app) as http:
        org = await make_tenant(s3_app, http)

        def fail_this_insert(session: Session, _context: Any, _instances: Any) -> None:
            for obj in session.new:
                if isinstance(obj, StoredFile) and str(obj.organization_id) == org.id:
                    raise RuntimeError("database fault injected by the test")

        event.listen(Session, "before_flush", fail_this_insert)
        try:
            response = await upload(http, org.files, org.owner, PNG)
        finally:
            event.remove(Session, "before_flush", fail_this_insert)
        assert response.status_code == 500
        assert await org.stored_keys() == []
        listed = await http.get(org.files, headers=org.owner)
        assert listed.json()["meta"]["total"] == 0
