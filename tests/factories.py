"""Users, organizations, members, API keys and authenticated clients for every test module.

- `await register(client)` → `Account` (unique email, a password, the user JSON, tokens);
- `await create_account(app, client, role=PlatformRole.ADMIN)` → an `Account` with a
  platform role (created through the users service, then signed in over HTTP);
- `account.headers` → `{"Authorization": "Bearer ..."}`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from tenantry.core.security import Security
from tenantry.modules.users.models import PlatformRole
from tenantry.modules.users.service import create_user
from tenantry.services import services_of

DEFAULT_PASSWORD = "correct horse battery staple"

# Every password, token and secret the factories and auth tests handle: the log-capture
# check of tests/auth (see tests/auth/conftest.py) asserts none of them was ever logged.
ISSUED_SECRETS: set[str] = {DEFAULT_PASSWORD}


def remember_secret(*values: str) -> None:
    ISSUED_SECRETS.update(v for v in values if v)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Account:
    email: str
    password: str
    user: dict[str, Any]
    access_token: str
    refresh_token: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def _account(email: str, password: str, data: dict[str, Any]) -> Account:
    remember_secret(password, data["accessToken"], data["refreshToken"])
    return Account(
        email=email,
        password=password,
        user=data["user"],
        access_token=data["accessToken"],
        refresh_token=data["refreshToken"],
    )


async def register(
    client: httpx.AsyncClient,
    *,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    **fields: Any,
) -> Account:
    email = email or unique_email()
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": password, **fields}
    )
    assert response.status_code == 201, response.text
    return _account(email, password, response.json()["data"])


async def login(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD, **fields: Any
) -> Account:
    response = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": password, **fields}
    )
    assert response.status_code == 200, response.text
    return _account(email, password, response.json()["data"])


def security_of(app: FastAPI) -> Security:
    security: Security = services_of(app).security
    return security


async def create_account(
    app: FastAPI,
    client: httpx.AsyncClient,
    *,
    role: PlatformRole = PlatformRole.USER,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
) -> Account:
    """A user with a platform role (there is no public way to become an admin), signed in."""
    email = email or unique_email(role.value.lower())
    async with app.state.database.transaction() as session:
        await create_user(session, security_of(app), email=email, password=password, role=role)
    return await login(client, email, password)


async def _super_admin_client(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    admin = await create_account(app, client, role=PlatformRole.SUPER_ADMIN)
    return admin.headers


async def deactivate(app: FastAPI, client: httpx.AsyncClient, account: Account) -> None:
    """Set `isActive: false` through the admin API."""
    headers = await _super_admin_client(app, client)
    response = await client.patch(
        f"/api/v1/users/{account.id}", json={"isActive": False}, headers=headers
    )
    assert response.status_code == 200, response.text


async def soft_delete(app: FastAPI, client: httpx.AsyncClient, account: Account) -> None:
    """Soft-delete through the admin API."""
    headers = await _super_admin_client(app, client)
    response = await client.delete(f"/api/v1/users/{account.id}", headers=headers)
    assert response.status_code == 204, response.text


# --- organizations, members, API keys (modules/orgs, modules/api_keys) ------------------
#
# - `await create_org(client, owner)` → `Org` (created over HTTP; `owner` is its owner);
# - `await add_member(app, client, org, "member")` → a new signed-in `Account` with that
#   role in `org` (membership written directly; `account=` adds an existing account);
# - `await create_api_key(client, org, ["projects:read"])` → the raw `tnt_...` key
#   (created over HTTP by the org's owner); `api_key_headers(key)` to use it;
# - `await mark_email_verified(app, account)`.


@dataclass
class Org:
    id: str
    slug: str
    name: str
    owner: Account

    @property
    def path(self) -> str:
        return f"/api/v1/orgs/{self.id}"


async def create_org(
    client: httpx.AsyncClient, owner: Account, *, name: str | None = None, **fields: Any
) -> Org:
    name = name or f"Org {uuid.uuid4().hex[:8]}"
    response = await client.post(
        "/api/v1/orgs", json={"name": name, **fields}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return Org(id=data["id"], slug=data["slug"], name=data["name"], owner=owner)


async def add_member(
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    role: str = "member",
    *,
    account: Account | None = None,
) -> Account:
    """A member of `org` with `role` (a freshly registered user unless `account` is given)."""
    from tenantry.modules.orgs.members import add_member as add_membership

    account = account or await register(client)
    async with app.state.database.transaction() as session:
        await add_membership(
            session, app.state.cache, uuid.UUID(org.id), uuid.UUID(account.id), role
        )
    return account


async def create_api_key(
    client: httpx.AsyncClient,
    org: Org,
    permissions: list[str],
    *,
    by: Account | None = None,
    **fields: Any,
) -> str:
    response = await client.post(
        f"{org.path}/api-keys",
        json={"name": f"key-{uuid.uuid4().hex[:6]}", "permissions": permissions, **fields},
        headers=(by or org.owner).headers,
    )
    assert response.status_code == 201, response.text
    key = str(response.json()["data"]["key"])
    remember_secret(key)
    return key


def api_key_headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def mark_email_verified(app: FastAPI, account: Account) -> None:
    from sqlalchemy import update

    from tenantry.core.db import utcnow
    from tenantry.modules.users.models import User

    async with app.state.database.transaction() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(account.id)).values(email_verified_at=utcnow())
        )


async def age_refresh_rotation(app: FastAPI, token: str, seconds: float) -> None:
    """Move the rotation of refresh `token` `seconds` into the past (past the reuse grace)."""
    import datetime as dt

    from sqlalchemy import select, update

    from tenantry.core.security import sha256_hex
    from tenantry.modules.auth.models import RefreshToken

    async with app.state.database.transaction() as session:
        where = RefreshToken.token_hash == sha256_hex(token)
        rotated_at = await session.scalar(select(RefreshToken.rotated_at).where(where))
        assert rotated_at is not None, "the token was not rotated"
        await session.execute(
            update(RefreshToken)
            .where(where)
            .values(rotated_at=rotated_at - dt.timedelta(seconds=seconds))
        )


TEST_JOB_TYPE = "test.orgs.noop"


def _register_test_job() -> None:
    from tenantry.core.jobs import JobContext, job_handler
    from tenantry.core.jobs.registry import get_handler

    if get_handler(TEST_JOB_TYPE) is None:

        @job_handler(TEST_JOB_TYPE)
        async def noop(_ctx: JobContext) -> dict[str, Any]:
            return {}


async def create_org_job(app: FastAPI, org: Org, job_type: str | None = None) -> str:
    """A queued job of `org`, due tomorrow (no worker of the test run claims it meanwhile)."""
    import datetime as dt

    from tenantry.core.jobs import enqueue

    _register_test_job()
    async with app.state.database.transaction() as session:
        job = await enqueue(
            session,
            job_type or TEST_JOB_TYPE,
            {},
            organization_id=uuid.UUID(org.id),
            created_by=uuid.UUID(org.owner.id),
            run_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )
        return str(job.id)
