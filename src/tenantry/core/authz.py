"""Request-level authorization: the tenant gate of a request and `require(permission)`.

Every route under `/orgs/{orgId}/` depends on ONE gate:

    get_tenant_context  -- parses `orgId`, binds the request's session to it provisionally
                           and runs the app's `TenantGate` (`Services.gate`, built by
                           create_app from modules/orgs/gate.py): principal, membership,
                           plan state, API rate, usage → the TenantContext (404 for
                           non-members); then binds the session to that context. Once per
                           request (FastAPI caches the dependency).
    require("x:y")      -- 403 unless the context holds `x:y` (or `x:y:own`)

Core cannot import the feature modules, so the gate is typed here (`TenantGate`) and
provided as a service, not looked up under a string key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute

from tenantry.core.errors import Forbidden
from tenantry.core.metrics import attribute_request
from tenantry.core.openapi import TENANT_SECURITY, OpenAPIFacts, declare
from tenantry.core.permissions import check_known, grants, grants_on_row
from tenantry.core.routing import SessionDep
from tenantry.core.tenancy import TenantContext, TenantScopeError, bind_tenant
from tenantry.services import services_of


@dataclass(frozen=True, slots=True)
class Principal:
    """Who opened a long-lived connection (an event stream), kept to check them again.

    Either an API key (`api_key_id`, acting for `user_id`), or a user's token: its session
    id (None for an external provider's token, which has no local session) and issue
    time, enough to ask whether it was revoked since.
    """

    user_id: uuid.UUID | None
    api_key_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    issued_at: float = 0.0


class TenantGate(Protocol):
    """Principal + membership + plan of the caller in `org_id`, or the 401/403/404/402/429."""

    async def __call__(
        self, request: Request, session: AsyncSession, org_id: uuid.UUID
    ) -> TenantContext: ...

    def principal_of(self, request: Request, context: TenantContext) -> Principal:
        """Who passed the gate with `context` on `request` (to `confirm` them later)."""
        ...

    async def confirm(
        self, session: AsyncSession, org_id: uuid.UUID, principal: Principal
    ) -> TenantContext:
        """`principal`'s context in `org_id` now, or the 401/404 it would get on a request:
        a revoked session, key or membership, a deleted organization."""
        ...


PERMISSIONS_EXTENSION = "x-permissions"


async def get_tenant_context(
    request: Request,
    session: SessionDep,
    org_id: Annotated[uuid.UUID, Path(alias="orgId", description="The organization's id")],
) -> TenantContext:
    """The caller's context in organization `orgId`, with the request's session bound to it.

    The gate runs on a session already bound to `orgId` with an empty context (so it reads
    memberships and API keys of this organization through the same automatic scoping) and
    raises NotFound for a caller who is not a member.
    """
    bind_tenant(session, TenantContext(organization_id=org_id))
    context = await services_of(request).gate(request, session, org_id)
    if context.organization_id != org_id:
        raise TenantScopeError("the gate returned another organization's context")
    bind_tenant(session, context)
    attribute_request(org_id)  # per-tenant metrics: this request serves `orgId`
    return context


declare(
    get_tenant_context,
    security=TENANT_SECURITY,  # a JWT or a `tnt_` key as Bearer, or the key as X-API-Key
    errors={
        401: ["unauthorized", "token_expired"],
        403: ["organization_suspended"],
        404: ["not_found"],  # not a member: the organization is not revealed
        429: ["rate_limited"],  # the plan's API rate
    },
    write_errors={
        402: ["trial_expired", "subscription_canceled"],  # reads stay allowed
        409: ["conflict"],
    },
)

TenantContextDep = Annotated[TenantContext, Depends(get_tenant_context)]


async def get_tenant_session(_context: TenantContextDep, session: SessionDep) -> AsyncSession:
    """The request's session once the gate has bound it to the caller's organization.

    Loaders take this instead of a session plus an unused context parameter: the type says
    the session is scoped, and FastAPI runs the gate first because this depends on it.
    """
    return session


TenantSessionDep = Annotated[AsyncSession, Depends(get_tenant_session)]


@dataclass(frozen=True, slots=True)
class Tenant:
    """The tenant gate's whole answer: who (principal, membership, plan state) and where
    (the session bound to the organization)."""

    context: TenantContext
    session: AsyncSession


async def get_tenant(context: TenantContextDep, session: TenantSessionDep) -> Tenant:
    return Tenant(context=context, session=session)


TenantDep = Annotated[Tenant, Depends(get_tenant)]


class Require:
    """A dependency: the request's TenantContext, or 403 without `permission`."""

    openapi_facts = OpenAPIFacts(errors={403: ("forbidden",)})

    def __init__(self, permission: str) -> None:
        self.permission = check_known(permission)

    async def __call__(self, context: TenantContextDep) -> TenantContext:
        if not grants(context.permissions, self.permission):
            raise Forbidden(f"This needs the {self.permission} permission")
        return context

    def __repr__(self) -> str:
        return f"require({self.permission!r})"


def require(permission: str) -> Require:
    """`Depends(require("projects:write"))`: the permission a route needs, shown in OpenAPI.

    With only `x:y:own`, this passes and the service must still check the row with
    `authorize_row` (e.g. a member deleting a task someone else created gets 403).
    """
    return Require(permission)


def authorize_row(context: TenantContext, permission: str, created_by: uuid.UUID | None) -> None:
    """403 unless `context` may apply `permission` to a row created by `created_by`."""
    if not grants_on_row(
        context.permissions, permission, actor_id=context.actor_id, created_by=created_by
    ):
        raise Forbidden(f"This needs the {permission} permission")


def route_permissions(dependant: Dependant) -> list[str]:
    """The permissions a route (its `dependant`) requires, in declaration order."""
    found: list[str] = []
    for call in _calls(dependant):
        if isinstance(call, Require) and call.permission not in found:
            found.append(call.permission)
    return found


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def document_permissions(schema: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Write each route's required permissions into its OpenAPI operation."""
    paths = schema.get("paths", {})
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        needed = route_permissions(route.dependant)
        if not needed:
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            operation[PERMISSIONS_EXTENSION] = needed
            line = "Requires permission " + ", ".join(f"`{p}`" for p in needed) + "."
            description = operation.get("description")
            operation["description"] = f"{description}\n\n{line}" if description else line
    return schema
