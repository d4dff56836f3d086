"""`AuditRequest`: a route dependency that gives audit entries the request's IP, agent, id.

Tenant routes get it from the tenant gate already; routes outside `/orgs/{orgId}/` that
write audit entries (creating an organization, accepting an invitation) declare it.
"""

from __future__ import annotations

from fastapi import Depends, Request

from tenantry.core.routing import SessionDep
from tenantry.modules.audit.service import remember_request


async def capture_request(request: Request, session: SessionDep) -> None:
    remember_request(session, request)


AuditRequest = Depends(capture_request)
