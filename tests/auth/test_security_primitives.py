"""Unit tests for `core/security.py`: the rules that are hard to reach through HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tenantry.config import Settings
from tenantry.core.security import InvalidAccessToken, PasswordHasher, SecretBox, TokenCodec
from tenantry.modules.users.models import PlatformRole, User
from tenantry.modules.users.service import create_user
from tests.factories import security_of, unique_email

# bcrypt ($2a$, cost 10) of "nestjs-Pass-2024", as a NestJS/Prisma app would have stored it.
NESTJS_BCRYPT_HASH = "$2a$10$fDEPdZQjae6r6Oy6ukt05.pGfdLoKtoxgs9pmpVKjyo0m8E1eK1ye"
NESTJS_PASSWORD = "nestjs-Pass-2024"


async def test_a_bcrypt_hash_verifies_and_is_flagged_for_rehash(settings: Settings) -> None:
    hasher = PasswordHasher(settings)
    matches, new_hash = await hasher.verify(NESTJS_PASSWORD, NESTJS_BCRYPT_HASH)
    assert matches
    assert new_hash is not None
    assert new_hash.startswith("$argon2id$")
    assert (await hasher.verify("wrong", NESTJS_BCRYPT_HASH)) == (False, None)


async def test_a_bcrypt_hash_never_matches_a_longer_password_by_its_prefix(
    settings: Settings,
) -> None:
    import bcrypt

    prefix = "p" * 72
    legacy = bcrypt.hashpw(prefix.encode(), bcrypt.gensalt(4)).decode()
    hasher = PasswordHasher(settings)
    assert (await hasher.verify(prefix, legacy))[0]
    assert (await hasher.verify(prefix + "tail", legacy)) == (False, None)


async def test_an_imported_bcrypt_user_logs_in_and_is_rehashed_to_argon2id(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    email = unique_email("imported")
    async with app.state.database.transaction() as session:
        user = await create_user(session, security_of(app), email=email, password="placeholder!")
        user.password_hash = NESTJS_BCRYPT_HASH  # as imported from the old database
    response = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": NESTJS_PASSWORD}
    )
    assert response.status_code == 200
    async with app.state.database.transaction() as session:
        stored = await session.scalar(select(User.password_hash).where(User.email == email))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    again = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": NESTJS_PASSWORD}
    )
    assert again.status_code == 200


async def test_argon2_cost_comes_from_settings(make_settings: Callable[..., Settings]) -> None:
    hasher = PasswordHasher(make_settings(password_hash_memory_kib=128, password_hash_time_cost=2))
    assert (await hasher.hash("whatever password")).startswith("$argon2id$v=19$m=128,t=2,p=1$")


async def test_a_hash_made_at_an_older_cost_is_upgraded(
    make_settings: Callable[..., Settings],
) -> None:
    old = await PasswordHasher(make_settings(password_hash_time_cost=1)).hash("a password")
    matches, new_hash = await PasswordHasher(make_settings(password_hash_time_cost=2)).verify(
        "a password", old
    )
    assert matches
    assert new_hash is not None
    assert ",t=2," in new_hash


def test_production_refuses_a_weak_hashing_cost(make_settings: Callable[..., Settings]) -> None:
    from tenantry.config import SettingsError

    with pytest.raises(SettingsError, match="PASSWORD_HASH_MEMORY_KIB"):
        make_settings(
            env="production",
            database_url="postgresql+asyncpg://u@127.0.0.1/db",
            password_hash_memory_kib=1024,
        )


def test_token_codec_rejects_other_keys_and_types(make_settings: Callable[..., Settings]) -> None:
    codec = TokenCodec(make_settings())
    token = codec.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role=PlatformRole.USER)
    assert codec.verify(token).role == "USER"
    other = TokenCodec(make_settings(secret_key="another-secret-key-" + "y" * 32))
    with pytest.raises(InvalidAccessToken):
        other.verify(token)
    with pytest.raises(InvalidAccessToken):
        codec.verify("not.a.jwt")


def test_secret_box_round_trips_and_binds_the_context(
    make_settings: Callable[..., Settings],
) -> None:
    box = SecretBox(make_settings())
    sealed = box.encrypt("JBSWY3DPEHPK3PXP", context="user-1")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.decrypt(sealed, context="user-1") == "JBSWY3DPEHPK3PXP"
    with pytest.raises(ValueError):
        box.decrypt(sealed, context="user-2")
    with pytest.raises(ValueError):
        SecretBox(make_settings(secret_key="z" * 40)).decrypt(sealed, context="user-1")


async def test_hashing_runs_with_bounded_concurrency(
    make_settings: Callable[..., Settings],
) -> None:
    import asyncio
    import threading

    hasher = PasswordHasher(make_settings(password_hash_concurrency=2))
    running = 0
    peak = 0
    lock = threading.Lock()
    original = hasher._hash.hash

    def counting_hash(password: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            import time

            time.sleep(0.02)
            return original(password)
        finally:
            with lock:
                running -= 1

    hasher._hash.hash = counting_hash  # type: ignore[method-assign]
    await asyncio.gather(*(hasher.hash(f"password {i}") for i in range(8)))
    assert peak == 2
