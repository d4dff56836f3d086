"""The role → permission matrix against API.md's table, `:own` scope and granting rules."""

from __future__ import annotations

import uuid

import pytest

from tenantry.core.authz import authorize_row, require
from tenantry.core.errors import Forbidden
from tenantry.core.permissions import (
    CORE_PERMISSIONS,
    KNOWN_PERMISSIONS,
    PERMISSIONS,
    RESOURCES,
    ROLE_PERMISSIONS,
    Role,
    UnknownPermission,
    can_change_role,
    can_grant,
    covers,
    grants,
    grants_on_row,
    role_permissions,
    roles_table,
)
from tenantry.core.tenancy import TenantContext

# Copied from API.md ("Organizations", "Roles"), word for word.
API_MD_PERMISSIONS = """org:read org:update org:delete members:read members:invite members:manage
  projects:read projects:write projects:delete tasks:read tasks:write tasks:delete
  files:read files:write files:delete api_keys:manage audit:read billing:read
  billing:manage exports:create jobs:read"""

API_MD_TABLE = {
    "owner": "all",
    "admin": "all except `org:delete`, `billing:manage`",
    "manager": "`org:read members:read projects:* tasks:* files:* audit:read exports:create "
    "jobs:read billing:read`",
    "member": "`org:read members:read projects:read tasks:read tasks:write tasks:delete:own "
    "files:read files:write files:delete:own jobs:read`",
    "viewer": "`org:read members:read projects:read tasks:read files:read jobs:read`",
    "billing": "`org:read members:read billing:read billing:manage`",
}


# Added to API.md's matrix, documented in docs/tenancy.md ("Roles") and docs/jobs.md:
# `jobs:cancel` cancels any job of the organization (owner and admin hold everything).
ADDED_PERMISSIONS = {"jobs:cancel": {"owner", "admin", "manager"}}


def expected_permissions(cell: str) -> set[str]:
    everything = set(API_MD_PERMISSIONS.split())
    if cell == "all":
        return everything
    if cell.startswith("all except"):
        return everything - {word.strip("`,") for word in cell.split()[2:]}
    result: set[str] = set()
    for word in cell.strip("`").split():
        if word.endswith(":*"):
            result |= {p for p in everything if p.startswith(word[:-1])}
        else:
            result.add(word)
    return result


def test_permission_list_is_api_md_s_list_in_order() -> None:
    assert list(CORE_PERMISSIONS) == API_MD_PERMISSIONS.split() + list(ADDED_PERMISSIONS)
    assert list(PERMISSIONS[: len(CORE_PERMISSIONS)]) == list(CORE_PERMISSIONS)


@pytest.mark.parametrize("role", list(API_MD_TABLE))
def test_role_has_exactly_api_md_s_permissions(role: str) -> None:
    # Generated resources' permissions (RESOURCE_DEFAULTS) come on top of API.md's table.
    core = {p for p in role_permissions(role) if p.split(":")[0] not in RESOURCES}
    added = {p for p, roles in ADDED_PERMISSIONS.items() if role in roles}
    assert core == expected_permissions(API_MD_TABLE[role]) | added


def test_the_six_built_in_roles_and_nothing_else() -> None:
    assert {role.value for role in Role} == set(API_MD_TABLE)
    assert set(ROLE_PERMISSIONS) == set(Role)
    with pytest.raises(ValueError):
        role_permissions("superuser")


def test_every_role_permission_is_a_known_permission() -> None:
    for permissions in ROLE_PERMISSIONS.values():
        assert permissions <= KNOWN_PERMISSIONS


def test_roles_table_lists_every_role_in_api_md_order() -> None:
    table = roles_table()
    assert [entry["role"] for entry in table] == list(API_MD_TABLE)
    member = next(entry for entry in table if entry["role"] == "member")
    core = [p for p in member["permissions"] if p.split(":")[0] not in RESOURCES]
    assert core == [
        "org:read",
        "members:read",
        "projects:read",
        "tasks:read",
        "tasks:write",
        "tasks:delete:own",
        "files:read",
        "files:write",
        "files:delete:own",
        "jobs:read",
    ]


def test_own_scope_passes_the_route_check_but_only_own_rows() -> None:
    member = role_permissions("member")
    me, someone = uuid.uuid4(), uuid.uuid4()
    assert grants(member, "tasks:delete")
    assert not grants(member, "projects:delete")
    assert grants_on_row(member, "tasks:delete", actor_id=me, created_by=me)
    assert not grants_on_row(member, "tasks:delete", actor_id=me, created_by=someone)
    assert not grants_on_row(member, "tasks:delete", actor_id=None, created_by=None)
    manager = role_permissions("manager")
    assert grants_on_row(manager, "tasks:delete", actor_id=me, created_by=someone)


def test_authorize_row_forbids_deleting_someone_elses_task_with_only_own_scope() -> None:
    me = uuid.uuid4()
    ctx = TenantContext(
        organization_id=uuid.uuid4(), user_id=me, permissions=role_permissions("member")
    )
    authorize_row(ctx, "tasks:delete", created_by=me)
    with pytest.raises(Forbidden):
        authorize_row(ctx, "tasks:delete", created_by=uuid.uuid4())
    with pytest.raises(Forbidden):
        authorize_row(ctx, "projects:delete", created_by=me)


@pytest.mark.parametrize(
    ("granter", "target", "allowed"),
    [
        ("owner", "owner", True),
        ("owner", "billing", True),
        ("admin", "owner", False),
        ("admin", "admin", True),
        ("admin", "manager", True),
        ("admin", "member", True),
        ("admin", "viewer", True),
        ("admin", "billing", False),  # billing:manage is not an admin's to give
        ("manager", "admin", False),
        ("manager", "member", True),
        ("member", "manager", False),
        ("viewer", "member", False),
        ("billing", "viewer", False),
    ],
)
def test_nobody_grants_a_role_with_permissions_they_lack(
    granter: str, target: str, allowed: bool
) -> None:
    assert can_grant(granter, target) is allowed


def test_an_admin_cannot_demote_an_owner() -> None:
    assert not can_change_role("admin", "owner", "member")
    assert can_change_role("owner", "owner", "member")
    assert can_change_role("admin", "member", "manager")


def test_covers_own_scope() -> None:
    member = role_permissions("member")
    assert covers(member, ["tasks:write", "tasks:delete:own"])
    assert not covers(member, ["tasks:delete"])
    assert covers(role_permissions("manager"), ["tasks:delete:own"])


def test_require_rejects_an_unknown_permission_at_declaration() -> None:
    with pytest.raises(UnknownPermission):
        require("projects:wrte")
    assert require("tasks:delete:own").permission == "tasks:delete:own"
