"""The HTTP skeleton through HTTP: envelopes, every error status, unit of work, middleware."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tenantry.app import create_app
from tenantry.config import Settings
from tenantry.core.responses import decode_cursor
from tests.conftest import client_for
from tests.core import probe


@pytest.fixture(scope="module")
async def probe_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app of its own with the probe routes (the shared app stays as shipped)."""
    application = create_app(settings)
    application.include_router(probe.router)
    async with application.router.lifespan_context(application):
        async with application.state.database.engine.begin() as conn:
            await conn.run_sync(probe.ProbeBase.metadata.create_all)
        yield application


@pytest.fixture
async def http(probe_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(probe_app) as client:
        yield client


def unique(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["statusCode"] == status
    assert body["code"] == code
    assert body["requestId"] == response.headers["x-request-id"]
    assert body["path"] == response.request.url.path
    assert body["timestamp"].endswith("Z")
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


async def test_success_envelope_has_data_and_utc_timestamp(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets", json={"name": unique(), "secretWord": "swordfish"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert set(body) == {"success", "data", "timestamp"}
    assert body["timestamp"].endswith("Z")
    assert set(body["data"]) == {"id", "name", "parentId"}


async def test_offset_list_envelope_meta(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/probe/items", params={"page": 2, "limit": 10})
    body = response.json()
    assert body["data"] == list(range(11, 21))
    assert body["meta"] == {
        "total": 23,
        "page": 2,
        "limit": 10,
        "totalPages": 3,
        "hasNextPage": True,
        "hasPrevPage": True,
    }


async def test_cursor_list_envelope_meta(http: httpx.AsyncClient) -> None:
    seen: list[int] = []
    cursor = ""
    while True:
        body = (
            await http.get("/api/v1/probe/items", params={"cursor": cursor, "limit": 10})
        ).json()
        assert set(body["meta"]) == {"limit", "nextCursor", "hasNextPage"}
        seen += body["data"]
        if not body["meta"]["hasNextPage"]:
            assert body["meta"]["nextCursor"] is None
            break
        cursor = body["meta"]["nextCursor"]
    assert seen == list(range(1, 24))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": 0}, "page"),
        ({"limit": 101}, "limit"),
        ({"sortBy": "password"}, "sortBy"),
        ({"sortOrder": "sideways"}, "sortOrder"),
        ({"colour": "red"}, "colour"),
        ({"search": "a\x00b"}, "search"),
        ({"page": str(2**70)}, "page"),
    ],
)
async def test_bad_list_query_is_400_naming_the_field(
    http: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    body = assert_error(
        await http.get("/api/v1/probe/items", params=params), 400, "validation_error"
    )
    assert field in {detail["field"] for detail in body["details"]}


async def test_validation_error_never_echoes_the_submitted_value(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets", json={"name": unique(), "secretWord": "hunter2"}
    )
    body = assert_error(response, 400, "validation_error")
    assert body["details"] == [
        {"field": "secretWord", "message": "String should have at least 8 characters"}
    ]
    assert "hunter2" not in response.text


async def test_missing_field_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/probe/gadgets", json={"name": unique()})
    body = assert_error(response, 400, "validation_error")
    assert body["details"][0]["field"] == "secretWord"


async def test_unknown_field_is_rejected_not_ignored(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets",
        json={"name": unique(), "secretWord": "swordfish", "organizationId": str(uuid.uuid4())},
    )
    body = assert_error(response, 400, "validation_error")
    assert body["details"] == [{"field": "organizationId", "message": "Unknown field"}]


async def test_nul_byte_in_a_string_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets", json={"name": "bad\x00name", "secretWord": "swordfish"}
    )
    assert_error(response, 400, "validation_error")


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets",
        content=b'{"name": "x",',
        headers={"content-type": "application/json"},
    )
    body = assert_error(response, 400, "validation_error")
    assert body["details"] == [{"field": "body", "message": "Malformed JSON"}]


async def test_malformed_uuid_in_a_path_or_body_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets",
        json={"name": unique(), "secretWord": "swordfish", "parentId": "not-a-uuid"},
    )
    assert_error(response, 400, "validation_error")


async def test_wrong_content_type_is_415(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets", content=b"name=x", headers={"content-type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")


async def test_body_too_large_is_413_from_content_length(http: httpx.AsyncClient) -> None:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await http.post(
        "/api/v1/probe/gadgets", content=big, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


async def test_body_too_large_is_413_when_streamed_without_length(
    http: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = await http.post(
        "/api/v1/probe/gadgets", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


async def test_unknown_route_is_404_envelope(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/v1/no/such/route"), 404, "not_found")


async def test_wrong_method_is_405_envelope(http: httpx.AsyncClient) -> None:
    assert_error(await http.delete("/api/v1/probe/items"), 405, "method_not_allowed")


async def test_unique_violation_is_409(http: httpx.AsyncClient) -> None:
    name = unique()
    first = await http.post("/api/v1/probe/gadgets", json={"name": name, "secretWord": "12345678"})
    assert first.status_code == 201
    again = await http.post("/api/v1/probe/gadgets", json={"name": name, "secretWord": "12345678"})
    assert_error(again, 409, "conflict")


async def test_foreign_key_violation_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/probe/gadgets",
        json={"name": unique(), "secretWord": "12345678", "parentId": str(uuid.uuid4())},
    )
    assert_error(response, 400, "validation_error")


async def test_a_failing_commit_is_an_error_never_a_201(http: httpx.AsyncClient) -> None:
    name = unique()
    await http.post("/api/v1/probe/gadgets", json={"name": name, "secretWord": "12345678"})
    response = await http.post(
        "/api/v1/probe/gadgets/unflushed", json={"name": name, "secretWord": "12345678"}
    )
    assert_error(response, 409, "conflict")


async def test_an_error_after_a_write_rolls_the_write_back(http: httpx.AsyncClient) -> None:
    name = unique()
    response = await http.post(
        "/api/v1/probe/gadgets/then-fail", json={"name": name, "secretWord": "12345678"}
    )
    assert_error(response, 409, "conflict")
    lookup = await http.get(f"/api/v1/probe/gadgets/by-name/{name}")
    assert lookup.status_code == 500  # scalar_one() found nothing: the write is gone


async def test_unexpected_error_is_500_without_internals(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/probe/boom")
    body = assert_error(response, 500, "internal_error")
    assert "SELECT" not in response.text
    assert "Traceback" not in response.text
    assert body["requestId"]


async def test_request_id_is_echoed_or_generated(http: httpx.AsyncClient) -> None:
    echoed = await http.get("/api/v1/probe/items", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await http.get("/api/v1/probe/items")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await http.get("/api/v1/probe/items", headers={"X-Request-Id": "a b<script>"})
    assert hostile.headers["x-request-id"] != "a b<script>"


async def test_security_headers_on_api_responses(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/probe/items")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers


async def test_hsts_only_behind_https(probe_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=probe_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/health/live")
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_docs_render_with_a_csp(http: httpx.AsyncClient) -> None:
    response = await http.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
    assert "default-src 'self'" in response.headers["content-security-policy"]


async def test_large_responses_are_gzipped(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/probe/big", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["data"] == "x" * 5000
    assert gzip.compress(b"x")  # the client decoded it transparently
    assert "accept-encoding" in response.headers["vary"].lower()
    assert response.headers["x-request-id"]


async def test_small_and_streamed_responses_are_not_gzipped(http: httpx.AsyncClient) -> None:
    # Below ~1 KiB gzip costs more CPU than it saves; a streamed answer (a download, an
    # event stream) goes out as the app sends it, never buffered or re-chunked by gzip.
    small = await http.get("/api/v1/probe/small", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    assert small.json()["data"] == "x" * 500
    streamed = await http.get("/api/v1/probe/stream", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in streamed.headers
    assert streamed.content == b"y" * 4096 * 4
    assert streamed.headers["x-request-id"]
    plain = await http.get("/api/v1/probe/big", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


async def test_one_middleware_layer_of_ours(probe_app: FastAPI) -> None:
    # Each ASGI layer costs a frame and a `send` wrapper per request: body limit, gzip,
    # request id, headers, metrics and access log are one layer; CORS only when configured.
    from tenantry.core.middleware import RequestContextMiddleware

    assert [m.cls for m in probe_app.user_middleware] == [RequestContextMiddleware]


async def test_cors_allows_configured_origins_with_credentials(
    build_app: Callable[..., Any],
) -> None:
    application = await build_app(cors_origins=["https://app.example.com"])
    async with client_for(application) as client:
        allowed = await client.options(
            "/api/v1/anything",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
        )
        denied = await client.options(
            "/api/v1/anything",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in denied.headers


async def test_cors_wildcard_never_comes_with_credentials(build_app: Callable[..., Any]) -> None:
    application = await build_app(cors_origins=["*"])
    async with client_for(application) as client:
        response = await client.get("/health/live", headers={"Origin": "https://x.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_tampered_cursor_is_400_not_500() -> None:
    from tenantry.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        decode_cursor("!!!not base64!!!", 2)
    with pytest.raises(ValidationFailed):
        decode_cursor("WyJhIl0", 2)  # ["a"]: wrong arity


async def test_cursor_round_trips(http: httpx.AsyncClient) -> None:
    cursor = (await http.get("/api/v1/probe/cursor")).json()["data"]
    assert decode_cursor(cursor, 2) == ["a", "1"]
