"""External identity providers (API.md): the configured issuers and their webhooks."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from starlette.responses import Response

from tenantry.core.errors import NotFound
from tenantry.core.openapi import ErrorEnvelope
from tenantry.core.responses import Envelope, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.modules.auth.deps import RevocationsDep, SettingsDep
from tenantry.modules.identity import webhooks
from tenantry.modules.identity.deps import ExternalAuthDep
from tenantry.modules.identity.schemas import ProviderOut
from tenantry.modules.orgs.deps import CacheDep

router = APIRouter(prefix="/auth/providers", tags=["auth"], route_class=UnitOfWorkRoute)


@router.get("", operation_id="auth_providers_list", summary="List external identity providers")
async def list_providers(external: ExternalAuthDep) -> Envelope[list[ProviderOut]]:
    """The external identity providers whose tokens are accepted (public fields only)."""
    return ok([ProviderOut.of(p) for p in external.providers])


@router.post(
    "/{name}/webhook",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="auth_providers_webhook",
    summary="Receive a provider's signed user-lifecycle event",
    responses={
        401: {"model": ErrorEnvelope, "description": "Bad, stale or replayed signature"},
        404: {"model": ErrorEnvelope, "description": "No such provider, or it has no webhook"},
        409: {"model": ErrorEnvelope, "description": "The change conflicts (email taken)"},
    },
)
async def receive_webhook(
    name: str,
    request: Request,
    external: ExternalAuthDep,
    settings: SettingsDep,
    session: SessionDep,
    cache: CacheDep,
    revocations: RevocationsDep,
) -> None:
    """A provider's signed user event: `user.deleted` erases, `user.updated` syncs the profile."""
    provider = external.provider(name)
    if provider is None or provider.webhook_scheme is None:
        raise NotFound("Identity provider not found")
    await webhooks.receive_webhook(
        session,
        cache,
        revocations,
        provider,
        dict(request.headers),
        await request.body(),
        tolerance_seconds=settings.auth_webhook_tolerance_seconds,
    )
