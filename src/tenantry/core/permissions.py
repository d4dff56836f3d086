"""Roles and permissions: the one table of who may do what inside an organization.

A permission is `resource:action`; `resource:action:own` grants the action only on rows
the actor created (`created_by == actor`). Permissions come from the membership's role
(read from the database on every request, never from a token); an API key carries a
subset of its creator's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"
    VIEWER = "viewer"
    BILLING = "billing"


OWN_SUFFIX = ":own"

# Every permission of API.md, in its order; then `jobs:cancel` (cancel any job of the
# organization; without it, only jobs one could have started: docs/jobs.md).
CORE_PERMISSIONS: tuple[str, ...] = (
    "org:read",
    "org:update",
    "org:delete",
    "members:read",
    "members:invite",
    "members:manage",
    "projects:read",
    "projects:write",
    "projects:delete",
    "tasks:read",
    "tasks:write",
    "tasks:delete",
    "files:read",
    "files:write",
    "files:delete",
    "api_keys:manage",
    "audit:read",
    "billing:read",
    "billing:manage",
    "exports:create",
    "jobs:read",
    "jobs:cancel",
)

# Resources added by `tenantry new-resource` (docs/adding-a-resource.md). Each one gets
# `<name>:read`, `<name>:write` and `<name>:delete`, granted by RESOURCE_DEFAULTS.
RESOURCES: tuple[str, ...] = (
    # new-resource: resources (the generator adds a line above this one)
)
RESOURCE_ACTIONS = ("read", "write", "delete")

PERMISSIONS: tuple[str, ...] = CORE_PERMISSIONS + tuple(
    f"{resource}:{action}" for resource in RESOURCES for action in RESOURCE_ACTIONS
)


def _all(resource: str) -> tuple[str, ...]:
    return tuple(p for p in PERMISSIONS if p.startswith(resource + ":"))


_EVERYTHING = frozenset(PERMISSIONS)

# THE matrix (API.md, "Roles"). Served at GET /api/v1/roles; checked by `require`.
ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: _EVERYTHING,
    Role.ADMIN: _EVERYTHING - {"org:delete", "billing:manage"},
    Role.MANAGER: frozenset(
        {
            "org:read",
            "members:read",
            *_all("projects"),
            *_all("tasks"),
            *_all("files"),
            "audit:read",
            "exports:create",
            "jobs:read",
            "jobs:cancel",
            "billing:read",
        }
    ),
    Role.MEMBER: frozenset(
        {
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
        }
    ),
    Role.VIEWER: frozenset(
        {"org:read", "members:read", "projects:read", "tasks:read", "files:read", "jobs:read"}
    ),
    Role.BILLING: frozenset({"org:read", "members:read", "billing:read", "billing:manage"}),
}

# What each role gets on a generated resource (owner and admin: everything, above).
RESOURCE_DEFAULTS: dict[Role, tuple[str, ...]] = {
    Role.MANAGER: ("read", "write", "delete"),
    Role.MEMBER: ("read", "write"),
    Role.VIEWER: ("read",),
}
for _role, _actions in RESOURCE_DEFAULTS.items():
    ROLE_PERMISSIONS[_role] |= {f"{r}:{a}" for r in RESOURCES for a in _actions}

# Any permission may be narrowed to `:own` (an API key for "my tasks only").
KNOWN_PERMISSIONS: frozenset[str] = _EVERYTHING | {p + OWN_SUFFIX for p in PERMISSIONS}


class UnknownPermission(ValueError):
    pass


def check_known(permission: str) -> str:
    if permission not in KNOWN_PERMISSIONS:
        raise UnknownPermission(f"unknown permission {permission!r}")
    return permission


def role_permissions(role: Role | str) -> frozenset[str]:
    """The permissions of a built-in role (ValueError for an unknown role)."""
    return ROLE_PERMISSIONS[Role(role)]


def grants(permissions: Iterable[str], permission: str) -> bool:
    """Whether `permissions` allow `permission` on at least the caller's own rows."""
    held = permissions if isinstance(permissions, frozenset) else frozenset(permissions)
    base = permission.removesuffix(OWN_SUFFIX)
    return base in held or base + OWN_SUFFIX in held


def grants_on_row(
    permissions: Iterable[str],
    permission: str,
    *,
    actor_id: uuid.UUID | None,
    created_by: uuid.UUID | None,
) -> bool:
    """Whether `permissions` allow `permission` on a row created by `created_by`."""
    held = permissions if isinstance(permissions, frozenset) else frozenset(permissions)
    base = permission.removesuffix(OWN_SUFFIX)
    if base in held:
        return True
    own = base + OWN_SUFFIX in held
    return own and actor_id is not None and created_by == actor_id


def covers(granter: Iterable[str], requested: Iterable[str]) -> bool:
    """Whether a holder of `granter` may hand out every permission of `requested`.

    Holding `x` covers `x` and `x:own`; holding only `x:own` covers only `x:own`.
    """
    held = frozenset(granter)
    for permission in requested:
        if permission in held:
            continue
        if permission.endswith(OWN_SUFFIX) and permission.removesuffix(OWN_SUFFIX) in held:
            continue
        return False
    return True


def can_grant(granter_role: Role | str, role: Role | str) -> bool:
    """Whether a member with `granter_role` may give someone `role`.

    Nobody grants a permission they do not hold, and only an owner makes an owner.
    """
    granter, target = Role(granter_role), Role(role)
    if target is Role.OWNER and granter is not Role.OWNER:
        return False
    return covers(ROLE_PERMISSIONS[granter], ROLE_PERMISSIONS[target])


def can_change_role(actor_role: Role | str, current: Role | str, new: Role | str) -> bool:
    """Changing a role takes the old one away and grants the new one: both must be allowed."""
    return can_grant(actor_role, current) and can_grant(actor_role, new)


def roles_table() -> list[dict[str, object]]:
    """The matrix as served at GET /api/v1/roles (permissions in API.md's order)."""
    order = {p: i for i, p in enumerate(PERMISSIONS)}

    def position(permission: str) -> tuple[int, int]:
        return order[permission.removesuffix(OWN_SUFFIX)], permission.endswith(OWN_SUFFIX)

    return [
        {"role": role.value, "permissions": sorted(ROLE_PERMISSIONS[role], key=position)}
        for role in Role
    ]
