"""The request boundary, as ONE pure-ASGI middleware (no per-request task or body copy).

`RequestContextMiddleware` gives every request an id (echoed from `X-Request-Id` when
sane), sets the security headers, refuses oversized bodies with 413 before they are read
(at once from `Content-Length`, or as soon as a streamed body crosses it) and bodies that
arrive too slowly with 408 (`BodyDeadline`), gzips large single-body answers, writes the
access log and the metrics, and turns an unexpected exception into the 500 envelope
*inside* the stack, so even that answer carries the request id. One layer instead of
four: every layer costs a coroutine frame and a `send` wrapper on every request.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import time
import uuid
from dataclasses import dataclass

import orjson
import structlog
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.core.errors import AppError, PayloadTooLarge, error_body, to_app_error
from tenantry.core.logging import get_logger
from tenantry.core.metrics import Metrics, begin_request_sample, end_request_sample

access_log = get_logger("tenantry.access")
error_log = get_logger("tenantry.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Below ~1 KiB gzip saves less than a TCP segment and costs more CPU than it saves on the
# wire; level 6 is zlib's default (9 costs ~2x the CPU for ~1 % smaller JSON).
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 6
_COMPRESSIBLE_TYPES = ("application/json", "text/", "application/javascript", "image/svg")


def _security_headers(headers: MutableHeaders, scope: Scope) -> None:
    path: str = scope["path"]
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    if path.startswith(DOCS_PATHS):
        headers.setdefault("Content-Security-Policy", DOCS_CSP)
    else:
        headers.setdefault("Content-Security-Policy", API_CSP)
    if path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")
    if scope.get("scheme") == "https":
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")


class RequestContextMiddleware:
    """The whole request boundary in one pure-ASGI layer (each layer costs every request).

    One pass over the request headers; then, per request: the request id, the security
    headers, the body limit and deadline (requests with a body only), gzip (only when the
    client accepts it and the whole answer is one body of `GZIP_MIN_BYTES` or more: streamed
    answers — downloads, event streams — pass untouched), the 500 envelope, the metrics and
    the access log.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        deadline: BodyDeadline,
        gzip_min_bytes: int = GZIP_MIN_BYTES,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        # A multipart envelope adds boundaries and part headers around the file itself.
        self.max_multipart_bytes = max_upload_bytes + 64 * 1024
        self.deadline = deadline
        self.gzip_min_bytes = gzip_min_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        facts = _RequestFacts(scope)
        request_id = facts.request_id
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        sample, sample_token = begin_request_sample()  # organization, database time
        status = 500
        response_started = False
        held: Message | None = None  # the start of a response that may still be gzipped

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started, held
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                _security_headers(headers, scope)
                if facts.accepts_gzip and _compressible(headers):
                    held = message  # decided by the first body message
                    return
            elif held is not None:
                start, held = held, None
                await _send_maybe_gzipped(send, start, message, self.gzip_min_bytes)
                return
            await send(message)

        try:
            if facts.has_body:
                receive = self._limited(facts, receive)
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if response_started:
                raise
            status = await self._send_error(scope, send_with_headers, request_id, exc)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            end_request_sample(sample_token)
            self.metrics.observe(scope["method"], route, status, elapsed, sample)
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client=(scope.get("client") or ("", 0))[0],
            )
            structlog.contextvars.unbind_contextvars("request_id")

    def _limited(self, facts: _RequestFacts, receive: Receive) -> Receive:
        """`receive` with the body limit (413) and the body deadline (408) applied."""
        limit = self.max_multipart_bytes if facts.is_multipart else self.max_body_bytes
        declared = facts.content_length
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
        deadline = self.deadline
        received = 0
        waited = 0.0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, waited, complete
            if complete:  # only `http.disconnect` is left to wait for: no deadline
                return await receive()
            budget = deadline.budget(received, waited)
            if budget <= 0:
                raise _too_slow()
            started = time.monotonic()
            try:
                async with asyncio.timeout(budget):
                    message = await receive()
            except TimeoutError:
                raise _too_slow() from None
            finally:
                waited += time.monotonic() - started
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise HTTPException(413, f"Request body is larger than {limit} bytes")
            return message

        return limited_receive

    async def _send_error(self, scope: Scope, send: Send, request_id: str, exc: Exception) -> int:
        error = to_app_error(exc)
        if error is None:
            error_log.exception("unhandled error", path=scope["path"])
            error = AppError()
        body = error_body(
            scope["path"], request_id, error.status_code, error.code, error.message, error.details
        )
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})
        return error.status_code


class _RequestFacts:
    """What the boundary needs from the request headers, read in one pass."""

    __slots__ = ("accepts_gzip", "content_length", "has_body", "is_multipart", "request_id")

    def __init__(self, scope: Scope) -> None:
        request_id: str | None = None
        self.accepts_gzip = False
        self.content_length: str | None = None
        self.is_multipart = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if request_id is None:
                    candidate = value.decode("latin-1")
                    request_id = candidate if _REQUEST_ID.match(candidate) else ""
            elif name == b"accept-encoding":
                self.accepts_gzip = b"gzip" in value
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"content-type":
                self.is_multipart = value.startswith(b"multipart/form-data")
        self.request_id = request_id or uuid.uuid4().hex
        self.has_body = scope["method"] not in _NO_BODY_METHODS


def _compressible(headers: MutableHeaders) -> bool:
    if "content-encoding" in headers:
        return False
    media_type = headers.get("content-type", "")
    return media_type.startswith(_COMPRESSIBLE_TYPES) and "event-stream" not in media_type


async def _send_maybe_gzipped(send: Send, start: Message, first: Message, min_bytes: int) -> None:
    """Send `start` then `first`, gzipped when `first` is the whole body and big enough."""
    body: bytes = first.get("body", b"")
    if first["type"] != "http.response.body" or first.get("more_body") or len(body) < min_bytes:
        await send(start)
        await send(first)
        return
    compressed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    headers = MutableHeaders(scope=start)
    headers["Content-Encoding"] = "gzip"
    headers["Content-Length"] = str(len(compressed))
    headers.add_vary_header("Accept-Encoding")
    await send(start)
    await send({"type": "http.response.body", "body": compressed})


@dataclass(frozen=True)
class BodyDeadline:
    """How long a client may take to send a request body (408 `request_timeout` beyond).

    Only the time spent *waiting for the client* counts (the server's own work between two
    reads does not): at most `timeout` seconds in all, and after `grace` seconds at least
    `min_rate` bytes per second on average. 0 for `min_rate` leaves only the deadline.
    """

    timeout: float
    grace: float
    min_rate: int

    def budget(self, received: int, waited: float) -> float:
        """Seconds the next read may still wait, having `received` bytes after `waited`."""
        allowed = self.timeout
        if self.min_rate:
            allowed = min(allowed, self.grace + received / self.min_rate)
        return allowed - waited


def _too_slow() -> HTTPException:
    # An HTTPException, because FastAPI turns other errors raised while reading the body
    # into a generic 400. The client is still sending: the connection is not reused.
    return HTTPException(408, "The request body did not arrive in time", {"Connection": "close"})
