"""External identity providers: OIDC issuers' tokens accepted, users linked by (provider, sub)."""
