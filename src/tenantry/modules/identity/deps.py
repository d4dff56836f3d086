"""The app's `ExternalAuth` as a typed dependency (routes of this feature)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tenantry.modules.identity.service import ExternalAuth
from tenantry.services import services_of


async def get_external_auth(request: Request) -> ExternalAuth:
    return services_of(request).external


ExternalAuthDep = Annotated[ExternalAuth, Depends(get_external_auth)]
