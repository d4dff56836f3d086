"""Dates a client sends are ISO 8601 text: a number, digits or an impossible date is a 400
`validation_error` naming the field, never a day in 1970 — in bodies and in queries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from tenantry.app import api_routers
from tenantry.core.responses import ListQuery, RequestSchema
from tenantry.modules.users.models import PlatformRole
from tests.factories import Account, create_account
from tests.tenant_helpers import Org, Tenants, tenants

__all__ = ["tenants"]

# `0` and `"0"` were read as 1970-01-01; `"86400"` as 1970-01-02; `"12345"` as a time.
BAD_TEXT = ["0", "86400", "12345", "2024-13-45", "not-a-date", "2024-05-01junk", ""]
BAD_JSON: list[Any] = [0, 86400, 1.5, "0", "12345", "2024-13-45", "not-a-date", True]


def assert_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in [detail["field"] for detail in body["details"]], body["details"]


@pytest.fixture
async def org(tenants: Tenants) -> Org:
    return await tenants.org()


@pytest.fixture
async def admin(tenants: Tenants) -> Account:
    return await create_account(tenants.app, tenants.client, role=PlatformRole.ADMIN)


async def test_task_due_dates_in_bodies_must_be_iso_dates(tenants: Tenants, org: Org) -> None:
    project = await org.project()
    tasks = org.url(f"/projects/{project['id']}/tasks")
    headers = org.owner.headers
    task = await org.task(project, dueDate="2024-05-01")
    assert task["dueDate"] == "2024-05-01"
    for value in BAD_JSON:
        created = await tenants.client.post(
            tasks, json={"title": "t", "dueDate": value}, headers=headers
        )
        assert_refused(created, "dueDate")
        changed = await tenants.client.patch(
            f"{tasks}/{task['id']}", json={"dueDate": value}, headers=headers
        )
        assert_refused(changed, "dueDate")
    listed = await tenants.client.get(tasks, headers=headers)
    assert [t["dueDate"] for t in listed.json()["data"]] == ["2024-05-01"]  # nothing changed


async def test_date_query_parameters_must_be_iso(
    tenants: Tenants, org: Org, admin: Account
) -> None:
    project = await org.project()
    recently = (dt.datetime.now(dt.UTC) - dt.timedelta(days=5)).date().isoformat()
    queries = [
        (org.url(f"/projects/{project['id']}/tasks"), "dueBefore", org.owner.headers),
        (org.url("/tasks"), "dueBefore", org.owner.headers),
        (org.url("/usage"), "from", org.owner.headers),
        (org.url("/usage"), "to", org.owner.headers),
        (org.url("/audit-logs"), "from", org.owner.headers),
        (org.url("/audit-logs"), "to", org.owner.headers),
        ("/api/v1/admin/stats", "from", admin.headers),
        ("/api/v1/admin/stats", "to", admin.headers),
    ]
    for url, name, headers in queries:
        good = f"{recently}T00:00:00Z" if url.endswith("/audit-logs") else recently
        accepted = await tenants.client.get(url, params={name: good}, headers=headers)
        assert accepted.status_code == 200, (url, name, accepted.text)
        for value in BAD_TEXT:
            refused = await tenants.client.get(url, params={name: value}, headers=headers)
            assert_refused(refused, name)


async def test_audit_filters_take_a_date_or_a_date_time(tenants: Tenants, org: Org) -> None:
    for value in ["2024-05-01", "2024-05-01T10:00", "2024-05-01 10:00:00+02:00"]:
        response = await tenants.client.get(
            org.url("/audit-logs"), params={"from": value}, headers=org.owner.headers
        )
        assert response.status_code == 200, (value, response.text)


async def test_api_key_expiry_must_be_an_iso_date_time(tenants: Tenants, org: Org) -> None:
    url = org.url("/api-keys")
    body = {"name": "k", "permissions": ["projects:read"]}
    # Seconds that land in the future (2100-01-01) were accepted as an expiry too.
    for value in [*BAD_JSON, 4102444800, "4102444800"]:
        response = await tenants.client.post(
            url, json={**body, "expiresAt": value}, headers=org.owner.headers
        )
        assert_refused(response, "expiresAt")
    listed = await tenants.client.get(url, headers=org.owner.headers)
    assert listed.json()["data"] == []
    accepted = await tenants.client.post(
        url, json={**body, "expiresAt": "2999-01-01T00:00:00Z"}, headers=org.owner.headers
    )
    assert accepted.status_code == 201, accepted.text


async def test_trial_end_set_by_an_admin_must_be_an_iso_date_time(
    tenants: Tenants, org: Org, admin: Account
) -> None:
    url = f"/api/v1/admin/orgs/{org.id}/subscription"
    body = {"plan": "pro", "status": "trialing"}
    for value in BAD_JSON:
        response = await tenants.client.put(
            url, json={**body, "trialEndsAt": value}, headers=admin.headers
        )
        assert_refused(response, "trialEndsAt")
    subscription = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    assert subscription.json()["data"]["plan"] != "pro"  # nothing changed


def _subclasses(base: type[BaseModel]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def test_every_date_field_of_a_request_model_is_checked_as_iso() -> None:
    """A new body or query model with a plain `dt.date` field would be lax again."""
    assert api_routers()  # every feature module (and its request models) is imported
    unchecked = []
    for model in _subclasses(RequestSchema) + _subclasses(ListQuery):
        for name, field in model.model_fields.items():
            described = repr(field.annotation) + repr(field.metadata)
            is_date = "datetime.date" in described or "Datetime" in described
            if is_date and "_iso_date" not in described:
                unchecked.append(f"{model.__module__}.{model.__name__}.{name}")
    assert unchecked == []
