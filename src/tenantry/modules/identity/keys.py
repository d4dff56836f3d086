"""The signing keys of one external issuer: discovered, fetched, cached, rotated.

- The JWKS address is `jwksUrl` when configured, else the `jwks_uri` of
  `<issuer>/.well-known/openid-configuration` (whose `issuer` must be the configured one).
- Keys are kept at most `AUTH_JWKS_TTL_SECONDS`: after that the JWKS is fetched again on
  the next use, so a key the issuer removed stops working within that time.
- A `kid` not in the cache fetches the JWKS again (a rotation), at most once per
  `REFETCH_COOLDOWN_SECONDS` per issuer: a flood of tokens with made-up `kid`s costs the
  issuer one request per 30 s, not one per token.
- When a fetch fails, the keys already cached keep working (the issuer's outage does not
  sign everybody out); a token with an unknown `kid` gets 401 meanwhile.

Fetches use httpx (async) rather than `PyJWKClient`, whose urllib calls would block the
event loop; the keys themselves are PyJWT's `PyJWK` (its maintained JWK parsing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from tenantry.config import AuthProvider

REFETCH_COOLDOWN_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 512 * 1024

log = structlog.get_logger(__name__)


KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    jwk: jwt.PyJWK
    kty: str
    alg: str | None  # the `alg` the JWKS pins the key to, if any

    def verifies(self, alg: str) -> bool:
        """Whether a token signed with `alg` may be checked with this key (same family)."""
        return (self.alg is None or self.alg == alg) and KEY_TYPES.get(alg[:2]) == self.kty


class JwksUnavailable(Exception):
    """The issuer's discovery document or JWKS could not be fetched or read."""


class MonotonicClock:
    """Seconds for cache ages (`time.monotonic`); tests move it with `advance`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class IssuerKeys:
    def __init__(
        self,
        provider: AuthProvider,
        http: httpx.AsyncClient,
        *,
        ttl_seconds: float,
        clock: Callable[[], float],
        cooldown_seconds: float = REFETCH_COOLDOWN_SECONDS,
    ) -> None:
        self._provider = provider
        self._http = http
        self._ttl = ttl_seconds
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._jwks_url = provider.jwks_url
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts, for tests and metrics

    async def key(self, kid: str) -> VerificationKey | None:
        """The issuer's current key `kid`, or None (unknown, or not fetchable now)."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
        if stale or kid not in self._keys:
            await self._refresh_if_allowed()
        return self._keys.get(kid)

    async def _refresh_if_allowed(self) -> None:
        async with self._lock:  # concurrent misses wait for one fetch instead of each making one
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._cooldown:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = await self._fetch()
            except JwksUnavailable as exc:
                # Keep what we have: cached keys go on working while the issuer is down.
                log.warning("jwks_fetch_failed", provider=self._provider.name, reason=str(exc))
                return
            self._keys = keys
            self._fetched_at = now

    async def _fetch(self) -> dict[str, VerificationKey]:
        if self._jwks_url is None:
            discovery = await self._get_json(
                self._provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            if str(discovery.get("issuer", "")).rstrip("/") != self._provider.issuer.rstrip("/"):
                raise JwksUnavailable("the discovery document names another issuer")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise JwksUnavailable("the discovery document has no jwks_uri")
            self._jwks_url = jwks_uri
        document = await self._get_json(self._jwks_url)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise JwksUnavailable("the JWKS has no keys")
        return _signing_keys(entries, self._provider.algorithms)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, timeout=FETCH_TIMEOUT_SECONDS)
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise JwksUnavailable(f"{url}: document too large")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise JwksUnavailable(f"{url}: {exc.__class__.__name__}") from None
        if not isinstance(body, dict):
            raise JwksUnavailable(f"{url}: not a JSON object")
        return body


def _signing_keys(entries: list[Any], algorithms: tuple[str, ...]) -> dict[str, VerificationKey]:
    """The JWKS entries usable to verify signatures: a `kid`, public, asymmetric, allowed."""
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in {"RSA", "EC", "OKP"}:
            continue  # encryption keys; symmetric (`oct`) keys are never accepted
        if "alg" in entry and entry["alg"] not in algorithms:
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # a key type or curve this PyJWT cannot use: skip it, keep the others
        keys[entry["kid"]] = VerificationKey(key, entry["kty"], entry.get("alg"))
    return keys
