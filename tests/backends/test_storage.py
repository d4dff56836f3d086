"""Storage contract: the local directory and S3 (moto's server on 127.0.0.1) behave the same."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from tenantry.core.errors import NotFound, PayloadTooLarge, ServiceUnavailable
from tenantry.core.storage import InvalidKey, Storage, check_key, create_storage, make_key
from tenantry.services import services_of

BUCKET = "tenantry-test"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, make_settings, tmp_path: Path) -> Storage:
    if request.param == "local":
        return create_storage(make_settings(storage_url=f"file://{tmp_path}/objects"))
    endpoint = request.getfixturevalue("moto_endpoint")
    return create_storage(
        make_settings(
            storage_url=f"s3://{BUCKET}/run-{os.getpid()}?endpoint={endpoint}&region=us-east-1",
            storage_access_key_id="test",
            storage_secret_access_key="test",
        )
    )


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_put_streams_in_and_reports_size_and_sha256(storage: Storage) -> None:
    data = os.urandom(300_000)
    key = make_key("orgs", "1", "files")
    stored = await storage.put(key, chunks_of(data, 64 * 1024))
    assert (stored.key, stored.size, stored.sha256) == (
        key,
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    stream = await storage.get(key)
    assert stream.size == len(data)
    assert await stream.read() == data


async def test_a_large_upload_goes_through_in_parts_and_comes_back_identical(
    storage: Storage,
) -> None:
    data = os.urandom(12 * 1024 * 1024)  # above the 5 MiB part size
    key = make_key("big")
    stored = await storage.put(key, chunks_of(data, 1024 * 1024))
    assert stored.size == len(data)
    digest = hashlib.sha256()
    chunks = 0
    async for chunk in await storage.get(key):
        digest.update(chunk)
        chunks += 1
    assert digest.hexdigest() == stored.sha256
    assert chunks >= 2  # streamed, not one buffer


async def test_put_replaces_an_existing_object(storage: Storage) -> None:
    key = make_key("replace")
    await storage.put_bytes(key, b"first")
    await storage.put_bytes(key, b"second")
    assert await (await storage.get(key)).read() == b"second"


async def test_exists_and_delete(storage: Storage) -> None:
    key = make_key("lifecycle")
    assert not await storage.exists(key)
    await storage.put_bytes(key, b"x")
    assert await storage.exists(key)
    await storage.delete(key)
    assert not await storage.exists(key)
    await storage.delete(key)  # deleting again is fine


async def test_getting_a_missing_object_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.get(make_key("missing"))


async def test_an_upload_over_max_bytes_is_refused_and_leaves_nothing(storage: Storage) -> None:
    key = make_key("too-big")
    with pytest.raises(PayloadTooLarge):
        await storage.put(key, chunks_of(b"x" * 5000, 1000), max_bytes=4096)
    assert not await storage.exists(key)


async def test_an_upload_failing_midway_leaves_no_partial_object(storage: Storage) -> None:
    key = make_key("aborted")

    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.put(key, broken())
    assert not await storage.exists(key)


async def test_unsafe_keys_are_refused_by_every_operation(storage: Storage) -> None:
    for key in ["../etc/passwd", "/abs/path", "a/../b", "a//b", "a\\b", "", "a/./b", "x/évil"]:
        with pytest.raises(InvalidKey):
            await storage.put_bytes(key, b"x")
        with pytest.raises(InvalidKey):
            await storage.get(key)
        with pytest.raises(InvalidKey):
            await storage.delete(key)
        with pytest.raises(InvalidKey):
            await storage.exists(key)


async def test_presigned_get_is_a_working_url_on_s3_and_none_locally(storage: Storage) -> None:
    key = make_key("shared", extension="txt")
    await storage.put_bytes(key, b"hello presigned")
    url = await storage.presigned_get_url(key, expires_in=60)
    if not storage.supports_presign:
        assert url is None
        return
    assert url is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"hello presigned"
    assert "X-Amz-Expires=60&" in url
    assert "X-Amz-Signature=" in url


def test_make_key_makes_unique_namespaced_keys_and_refuses_bad_parts() -> None:
    first, second = make_key("orgs", "42", extension="pdf"), make_key("orgs", "42", extension="pdf")
    assert first != second
    assert first.startswith("orgs/42/")
    assert first.endswith(".pdf")
    assert check_key(first) == first
    with pytest.raises(InvalidKey):
        make_key("orgs", "..")
    with pytest.raises(InvalidKey):
        make_key("orgs", extension="PDF;rm")
    with pytest.raises(InvalidKey):
        make_key("my report (final).pdf")


def test_the_local_backend_never_writes_outside_its_root(make_settings, tmp_path: Path) -> None:
    root = tmp_path / "root"
    create_storage(make_settings(storage_url=f"file://{root}"))
    with pytest.raises(InvalidKey):
        check_key("../outside")
    assert root.is_dir()


async def test_an_unreachable_s3_endpoint_is_service_unavailable(make_settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = create_storage(
        make_settings(
            storage_url=f"s3://{BUCKET}?endpoint=http://127.0.0.1:{port}&region=us-east-1",
            storage_access_key_id="test",
            storage_secret_access_key="test",
        )
    )
    with pytest.raises(ServiceUnavailable):
        await storage.exists(make_key("x"))


async def test_the_app_stores_files_under_var_dir_by_default(build_app, tmp_path: Path) -> None:
    app = await build_app(var_dir=tmp_path)
    storage: Storage = services_of(app).storage
    key = make_key("probe")
    await storage.put_bytes(key, b"on disk")
    assert (tmp_path / "storage" / key).read_bytes() == b"on disk"
    assert await storage.presigned_get_url(key) is None


async def test_the_content_type_is_kept_for_presigned_s3_downloads(
    moto_endpoint: str, make_settings
) -> None:
    storage = create_storage(
        make_settings(
            storage_url=f"s3://{BUCKET}?endpoint={moto_endpoint}&region=us-east-1",
            storage_access_key_id="test",
            storage_secret_access_key="test",
        )
    )
    key = make_key("typed", extension="pdf")
    await storage.put_bytes(key, b"%PDF-1.7", content_type="application/pdf")
    url = await storage.presigned_get_url(key)
    assert url is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.headers["content-type"] == "application/pdf"


async def test_the_local_backend_accepts_and_ignores_a_content_type(
    tmp_path: Path, make_settings
) -> None:
    storage = create_storage(make_settings(storage_url=f"file://{tmp_path}/typed"))
    key = make_key("typed")
    stored = await storage.put_bytes(key, b"x", content_type="text/plain")
    assert stored.size == 1
