"""The client-IP rule: X-Forwarded-For is believed only when a trusted proxy sent it."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from starlette.types import Scope

from tenantry.config import SettingsError
from tenantry.core.ratelimit import client_ip


def request_from(app: FastAPI, peer: str, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": headers,
        "client": (peer, 51000),
        "app": app,
    }
    return Request(scope)


@pytest.fixture
async def proxied_app(build_app) -> FastAPI:
    app: FastAPI = await build_app(trusted_proxies="10.0.0.1,172.16.0.0/12")
    return app


async def test_without_trusted_proxies_the_socket_peer_is_the_client(build_app) -> None:
    app = await build_app()
    assert client_ip(request_from(app, "203.0.113.9", ["198.51.100.1"])) == "203.0.113.9"


async def test_an_untrusted_peers_forwarded_for_is_ignored(proxied_app: FastAPI) -> None:
    assert client_ip(request_from(proxied_app, "203.0.113.9", ["1.2.3.4"])) == "203.0.113.9"


async def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(
    proxied_app: FastAPI,
) -> None:
    # The client forged "6.6.6.6"; the proxies appended the real hops on the right.
    forwarded = ["6.6.6.6, 198.51.100.7, 172.16.5.5"]
    assert client_ip(request_from(proxied_app, "10.0.0.1", forwarded)) == "198.51.100.7"


async def test_several_forwarded_for_headers_are_read_as_one_list(proxied_app: FastAPI) -> None:
    forwarded = ["6.6.6.6", "198.51.100.8"]
    assert client_ip(request_from(proxied_app, "10.0.0.1", forwarded)) == "198.51.100.8"


async def test_garbage_in_forwarded_for_falls_back_to_the_nearest_trusted_hop(
    proxied_app: FastAPI,
) -> None:
    forwarded = ["not-an-ip, 172.16.0.9"]
    assert client_ip(request_from(proxied_app, "10.0.0.1", forwarded)) == "172.16.0.9"


async def test_a_trusted_proxy_without_forwarded_for_is_itself_the_client(
    proxied_app: FastAPI,
) -> None:
    assert client_ip(request_from(proxied_app, "10.0.0.1")) == "10.0.0.1"


def test_invalid_trusted_proxies_are_refused_at_start(make_settings) -> None:
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        make_settings(trusted_proxies="10.0.0.1,proxy.local")
