"""Access JWTs and refresh-token rotation (API.md: Auth, tokens)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tenantry.core.security import derive_key, sha256_hex
from tenantry.modules.auth.models import AuthSession, RefreshToken
from tests.conftest import client_for
from tests.factories import Account, age_refresh_rotation, register

ME = "/api/v1/users/me"
REFRESH = "/api/v1/auth/refresh"


def _signing_key(app: FastAPI) -> bytes:
    return derive_key(app.state.settings.secret(), "tenantry/jwt-signing", 64)


def _claims(account: Account) -> dict:
    return jwt.decode(account.access_token, options={"verify_signature": False})


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(ME, headers={"Authorization": f"Bearer {token}"})


async def test_access_token_carries_the_contract_claims(account: Account) -> None:
    header = jwt.get_unverified_header(account.access_token)
    claims = _claims(account)
    assert header["alg"] == "HS256"
    assert {"sub", "sid", "iat", "exp", "jti", "role"} <= set(claims)
    assert claims["sub"] == account.id
    assert claims["role"] == "USER"
    assert claims["exp"] - int(claims["iat"]) == 15 * 60


async def test_a_tampered_token_is_401(client: httpx.AsyncClient, account: Account) -> None:
    header, _payload, signature = account.access_token.split(".")
    claims = _claims(account) | {"role": "SUPER_ADMIN"}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    forged = f"{header}.{forged_payload.rstrip('=')}.{signature}"
    response = await _me(client, forged)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    flipped = account.access_token[:-2] + (
        "AA" if not account.access_token.endswith("AA") else "BB"
    )
    assert (await _me(client, flipped)).status_code == 401


async def test_an_alg_none_token_is_401(client: httpx.AsyncClient, account: Account) -> None:
    unsigned = jwt.encode(_claims(account), key=None, algorithm="none")
    response = await _me(client, unsigned)
    assert response.status_code == 401


async def test_a_token_signed_with_another_algorithm_or_key_is_401(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    other_alg = jwt.encode(_claims(account), _signing_key(app), algorithm="HS512")
    assert (await _me(client, other_alg)).status_code == 401
    other_key = jwt.encode(_claims(account), b"k" * 64, algorithm="HS256")
    assert (await _me(client, other_key)).status_code == 401
    assert (await _me(client, jwt.encode(_claims(account), _signing_key(app)))).status_code == 200


async def test_an_expired_token_is_401_token_expired(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    claims = _claims(account) | {"iat": time.time() - 3600, "exp": int(time.time()) - 60}
    response = await _me(client, jwt.encode(claims, _signing_key(app), algorithm="HS256"))
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


async def test_a_token_without_typ_or_exp_is_401(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    for missing in ("typ", "exp", "iat"):
        claims = {k: v for k, v in _claims(account).items() if k != missing}
        token = jwt.encode(claims, _signing_key(app), algorithm="HS256")
        assert (await _me(client, token)).status_code == 401, missing


async def test_refresh_rotates_and_the_new_pair_works(
    client: httpx.AsyncClient, account: Account
) -> None:
    response = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["refreshToken"] != account.refresh_token
    assert (
        _claims(account)["sid"]
        == jwt.decode(data["accessToken"], options={"verify_signature": False})["sid"]
    )
    assert (await _me(client, data["accessToken"])).status_code == 200
    again = await client.post(REFRESH, json={"refreshToken": data["refreshToken"]})
    assert again.status_code == 200


async def test_reusing_a_rotated_refresh_token_after_the_grace_kills_the_newer_one(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    rotated = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
    newer = rotated.json()["data"]
    await age_refresh_rotation(app, account.refresh_token, 11)  # REFRESH_REUSE_GRACE_SECONDS=10

    replay = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert replay.status_code == 401

    response = await client.post(REFRESH, json={"refreshToken": newer["refreshToken"]})
    assert response.status_code == 401
    assert (await _me(client, newer["accessToken"])).status_code == 401


async def test_a_rotated_token_presented_again_within_the_grace_gets_the_same_successor(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    first = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert first.status_code == 200
    await age_refresh_rotation(app, account.refresh_token, 9)  # still inside the 10 s grace
    second = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert second.status_code == 200
    successor, again = first.json()["data"], second.json()["data"]
    assert again["refreshToken"] == successor["refreshToken"]
    assert (
        _claims(account)["sid"]
        == jwt.decode(again["accessToken"], options={"verify_signature": False})["sid"]
    )

    # The family is intact: both access tokens work and the successor rotates normally.
    for token in (successor["accessToken"], again["accessToken"]):
        assert (await _me(client, token)).status_code == 200
    assert (await _me(client, account.access_token)).status_code == 200
    onward = await client.post(REFRESH, json={"refreshToken": successor["refreshToken"]})
    assert onward.status_code == 200
    assert await _live_successors(app, uuid.UUID(_claims(account)["sid"])) == 1


async def test_the_successor_is_stored_sealed_and_only_for_the_grace_interval(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    first = (await client.post(REFRESH, json={"refreshToken": account.refresh_token})).json()
    successor = first["data"]["refreshToken"]
    sealed = await _sealed_successor(app, account.refresh_token)
    assert sealed is not None
    assert successor not in sealed

    await age_refresh_rotation(app, account.refresh_token, 11)
    second = await client.post(REFRESH, json={"refreshToken": successor})
    assert second.status_code == 200
    assert await _sealed_successor(app, account.refresh_token) is None  # grace over: dropped


async def _sealed_successor(app: FastAPI, token: str) -> str | None:
    async with app.state.database.transaction() as session:
        sealed: str | None = await session.scalar(
            select(RefreshToken.successor_sealed).where(
                RefreshToken.token_hash == sha256_hex(token)
            )
        )
    return sealed


async def test_two_tabs_refreshing_at_once_both_stay_signed_in(
    app: FastAPI, account: Account
) -> None:
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(client.post(REFRESH, json={"refreshToken": account.refresh_token}) for _ in range(2))
        )
        assert [r.status_code for r in responses] == [200, 200]
        tokens = {r.json()["data"]["refreshToken"] for r in responses}
        assert len(tokens) == 1
        for response in responses:
            assert (await _me(client, response.json()["data"]["accessToken"])).status_code == 200
        onward = await client.post(REFRESH, json={"refreshToken": tokens.pop()})
        assert onward.status_code == 200


async def test_a_grace_of_zero_revokes_the_family_at_the_first_replay(build_app) -> None:
    app = await build_app(refresh_reuse_grace_seconds=0, rate_limit_enabled=False)
    async with client_for(app) as client:
        account = await register(client)
        rotated = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
        assert rotated.status_code == 200
        replay = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
        assert replay.status_code == 401
        newer = rotated.json()["data"]["refreshToken"]
        assert (await client.post(REFRESH, json={"refreshToken": newer})).status_code == 401


async def test_an_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post(REFRESH, json={"refreshToken": "not-a-token"})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_refresh_tokens_are_stored_only_as_sha256(app: FastAPI, account: Account) -> None:
    async with app.state.database.transaction() as session:
        hashes = list(await session.scalars(select(RefreshToken.token_hash)))
    assert account.refresh_token not in hashes
    import hashlib

    assert hashlib.sha256(account.refresh_token.encode()).hexdigest() in hashes


async def _live_successors(app: FastAPI, session_id: uuid.UUID) -> int:
    async with app.state.database.transaction() as session:
        revoked = await session.scalar(
            select(AuthSession.revoked_at).where(AuthSession.id == session_id)
        )
        if revoked is not None:
            return 0
        live = await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.session_id == session_id, RefreshToken.rotated_at.is_(None))
        )
    return int(live or 0)


async def _refresh_concurrently(app: FastAPI, token: str, n: int) -> list[int]:
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(client.post(REFRESH, json={"refreshToken": token}) for _ in range(n))
        )
    return [r.status_code for r in responses]


async def test_concurrent_refreshes_yield_at_most_one_live_successor_sqlite(
    app: FastAPI, account: Account
) -> None:
    statuses = await _refresh_concurrently(app, account.refresh_token, 5)
    assert statuses == [200] * 5  # within the reuse grace every one gets the same successor
    assert await _live_successors(app, uuid.UUID(_claims(account)["sid"])) == 1


@pytest.mark.services
async def test_twenty_concurrent_refreshes_yield_at_most_one_live_successor(
    app: FastAPI, account: Account
) -> None:
    statuses = await _refresh_concurrently(app, account.refresh_token, 20)
    assert statuses == [200] * 20
    assert await _live_successors(app, uuid.UUID(_claims(account)["sid"])) == 1


async def test_a_new_registration_gets_its_own_session(client: httpx.AsyncClient) -> None:
    first, second = await register(client), await register(client)
    assert _claims(first)["sid"] != _claims(second)["sid"]


async def test_a_refresh_token_past_the_session_lifetime_is_401(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    import datetime as dt

    from sqlalchemy import update

    session_id = uuid.UUID(_claims(account)["sid"])
    async with app.state.database.transaction() as session:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    response = await client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert response.status_code == 401


async def test_revocation_holds_in_the_database_when_the_cache_lost_it(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    response = await client.post("/api/v1/auth/logout-all", headers=account.headers)
    assert response.status_code == 204
    await app.state.cache.delete(f"auth:valid-after:{account.id}")
    await app.state.cache.delete(f"auth:revoked-session:{_claims(account)['sid']}")
    assert (await _me(client, account.access_token)).status_code == 401


async def test_a_token_accepted_earlier_is_refused_once_it_expires(
    app: FastAPI, client: httpx.AsyncClient, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Verified tokens are remembered (no HMAC per request); the expiry is still checked.
    claims = _claims(account) | {"iat": time.time(), "exp": int(time.time()) + 120}
    token = jwt.encode(claims, _signing_key(app), algorithm="HS256")
    assert (await _me(client, token)).status_code == 200
    later = time.time() + 121
    monkeypatch.setattr("tenantry.core.security.time.time", lambda: later)
    response = await _me(client, token)
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"
