"""File storage behind one small interface, chosen by `STORAGE_URL` (obstore underneath).

`file://DIR` (default `VAR_DIR/storage`) keeps objects in a local directory;
`s3://bucket[/prefix]?endpoint=...&region=...` talks to any S3-compatible service.
Uploads and downloads stream (an async iterator of bytes in or out, never a whole file in
memory); `put` returns the size and SHA-256 it saw. Keys are made by the server
(`make_key`): a client filename never becomes part of a path, and `..`, absolute or
otherwise odd keys are refused. Presigned GET URLs exist on S3 only (None locally:
downloads then go through the API).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import obstore
import uuid_utils
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import LocalStore, S3Store

from tenantry.config import Settings
from tenantry.core.db import Wired, wiring_of
from tenantry.core.errors import NotFound, PayloadTooLarge, ServiceUnavailable

if TYPE_CHECKING:
    from obstore import GetResult
    from sqlalchemy.ext.asyncio import AsyncSession

    from tenantry.core.db import Database

MAX_KEY_LENGTH = 512
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_TRUE = {"1", "true", "yes", "on"}


class InvalidKey(ValueError):
    """A storage key that the server did not make (or could not have made)."""


def check_key(key: str) -> str:
    """Return `key` when it is a safe relative key; raise `InvalidKey` otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH or key.startswith("/") or "\\" in key:
        raise InvalidKey("storage keys are relative, non-empty and short")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            raise InvalidKey(f"invalid storage key segment {segment!r}")
    return key


def make_key(*namespace: str, extension: str | None = None) -> str:
    """A fresh server-generated key: `namespace/.../<uuid7>[.ext]` (time-ordered, unguessable).

    Namespace parts are ids or fixed words (e.g. `make_key("orgs", str(org_id), "files")`);
    never pass a client-supplied filename. `extension` must be short lowercase alphanumerics.
    """
    name = uuid_utils.uuid7().hex
    if extension is not None:
        if not _EXTENSION.fullmatch(extension):
            raise InvalidKey("extension must be 1-10 lowercase letters or digits")
        name = f"{name}.{extension}"
    return check_key("/".join([*namespace, name]))


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class ObjectStream:
    """An object being downloaded: its size, then its bytes in chunks (`async for`)."""

    def __init__(self, result: GetResult, *, chunk_size: int) -> None:
        self._result = result
        self._chunk_size = chunk_size
        self.size: int = result.meta["size"]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._result.stream(min_chunk_size=self._chunk_size):
                yield bytes(chunk)
        except BaseError as exc:
            raise ServiceUnavailable("File storage is unavailable; try again shortly") from exc

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])


class Storage:
    """Objects under server-made keys; one implementation per obstore store."""

    chunk_size = 1024 * 1024

    def __init__(
        self, store: Any, *, presign_seconds: int = 300, supports_presign: bool = False
    ) -> None:
        self.store = store
        self.presign_seconds = presign_seconds
        self.supports_presign = supports_presign

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int | None = None,
        content_type: str | None = None,
    ) -> StoredObject:
        """Stream `chunks` into `key` (replacing it); `PayloadTooLarge` past `max_bytes`.

        The object appears only once complete: an aborted upload leaves nothing behind.
        """
        check_key(key)
        digest = hashlib.sha256()
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(f"The file is larger than {max_bytes} bytes")
                digest.update(chunk)
                yield chunk

        # LocalStore cannot keep attributes (the API serves local files with the type it
        # stored in its own table); S3 keeps it for presigned downloads.
        remote = not isinstance(self.store, LocalStore)
        attributes = {"Content-Type": content_type} if content_type and remote else None
        try:
            await obstore.put_async(
                self.store, key, counted(), attributes=attributes, chunk_size=5 * 1024 * 1024
            )
        except BaseError as exc:
            raise _unavailable(exc) from exc
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    async def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> StoredObject:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.put(key, one(), **kwargs)

    async def get(self, key: str) -> ObjectStream:
        """Open `key` for streaming; `NotFound` (404) when there is no such object."""
        check_key(key)
        try:
            result = await obstore.get_async(self.store, key)
        except FileNotFoundError as exc:
            raise NotFound("File not found") from exc
        except BaseError as exc:
            raise _unavailable(exc) from exc
        return ObjectStream(result, chunk_size=self.chunk_size)

    async def exists(self, key: str) -> bool:
        check_key(key)
        try:
            await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return False
        except BaseError as exc:
            raise _unavailable(exc) from exc
        return True

    async def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing object is not an error."""
        check_key(key)
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            return
        except BaseError as exc:
            raise _unavailable(exc) from exc

    async def presigned_get_url(self, key: str, *, expires_in: int | None = None) -> str | None:
        """A time-limited download URL, or None when the backend cannot sign (local files)."""
        check_key(key)
        if not self.supports_presign:
            return None
        seconds = expires_in or self.presign_seconds
        try:
            return await obstore.sign_async(self.store, "GET", key, timedelta(seconds=seconds))
        except BaseError as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        """obstore clients hold no resources that need an explicit close."""


def _unavailable(exc: BaseError) -> ServiceUnavailable | NotFound:
    if isinstance(exc, NotFoundError):
        return NotFound("File not found")
    return ServiceUnavailable("File storage is unavailable; try again shortly")


STORAGE: Wired[Storage] = Wired("storage")


def bind_storage(database: Database, storage: Storage) -> None:
    """Every session of `database` (requests and job attempts) can reach `storage`.

    Called by `create_app` and `tenantry worker`, like `bind_mail`: a job handler finds
    the storage through `storage_of(ctx.session)`.
    """
    database.wiring.provide(STORAGE, storage)


def storage_of(session: AsyncSession) -> Storage:
    storage = wiring_of(session).get(STORAGE)
    if storage is None:
        raise RuntimeError("storage is not bound to this database: call bind_storage()")
    return storage


def create_storage(settings: Settings) -> Storage:
    url = urlsplit(settings.effective_storage_url)
    if url.scheme == "file":
        root = Path(url.netloc + url.path)
        root.mkdir(parents=True, exist_ok=True)
        return Storage(LocalStore(root, mkdir=True))
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    config: dict[str, Any] = {}
    if "endpoint" in query:
        config["endpoint"] = query["endpoint"]
        config["virtual_hosted_style_request"] = False  # path-style for MinIO & co.
    if "region" in query:
        config["region"] = query["region"]
    if settings.storage_access_key_id and settings.storage_secret_access_key:
        config["access_key_id"] = settings.storage_access_key_id
        config["secret_access_key"] = settings.storage_secret_access_key.get_secret_value()
    allow_http = query.get("endpoint", "").startswith("http://") or (
        query.get("allow_http", "").lower() in _TRUE
    )
    store = S3Store(
        url.netloc,
        prefix=url.path.strip("/") or None,
        config=config,  # type: ignore[arg-type]
        client_options={"allow_http": allow_http, "connect_timeout": timedelta(seconds=5)},
        # A few quick retries, then 503: a request must not hang for obstore's 3 minutes.
        retry_config={
            "max_retries": 3,
            "retry_timeout": timedelta(seconds=15),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
    )
    return Storage(store, presign_seconds=settings.storage_presign_seconds, supports_presign=True)
