"""What authentication needs of external identity providers (implemented by modules/identity).

A protocol, so that auth (which identity builds on: users, sessions, erasure) never imports
the identity feature: `Services.external` is the one implementation, `ExternalAuth`.
"""

from __future__ import annotations

from typing import Protocol

from tenantry.config import AuthProvider
from tenantry.core.security import AccessClaims


class ExternalIssuers(Protocol):
    def provider_of(self, token: str) -> AuthProvider | None:
        """The configured provider whose issuer `token` claims (None: a local token)."""
        ...

    async def authenticate(self, provider: AuthProvider, token: str) -> AccessClaims:
        """The verified token's linked user as access claims (`session_id` None), or 401/409."""
        ...
