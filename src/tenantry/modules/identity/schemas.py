"""What `GET /auth/providers` tells a client (public fields only: no webhook secret)."""

from __future__ import annotations

from tenantry.config import AuthProvider
from tenantry.core.responses import Schema


class ProviderOut(Schema):
    name: str
    issuer: str
    audience: list[str]
    jwks_url: str | None

    @classmethod
    def of(cls, provider: AuthProvider) -> ProviderOut:
        return cls(
            name=provider.name,
            issuer=provider.issuer,
            audience=list(provider.audience),
            jwks_url=provider.jwks_url,
        )
