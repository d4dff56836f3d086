"""Settings: every knob of the service, read from the environment and `.env`, validated once.

A bad value stops the process at start with one line naming the setting (see
`load_settings`). In development everything has a working default; with
`ENV=production` the unsafe defaults refuse to start.
"""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_KEY_LENGTH = 32
MIN_PRODUCTION_HASH_MEMORY_KIB = 19 * 1024
MIN_METRICS_TOKEN_LENGTH = 16
# MariaDB through asyncmy; the `mariadb` dialect (not `mysql`) stores UUIDs in its native
# 16-byte UUID type.
MARIADB_SCHEME = "mariadb+asyncmy://"


def default_hash_concurrency() -> int:
    """One password hash per core, less one (at least one): `PASSWORD_HASH_CONCURRENCY`."""
    return max(1, (os.cpu_count() or 1) - 1)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class TenancyMode(StrEnum):
    SHARED = "shared"  # one database, rows scoped by organization
    DATABASE = "database"  # each organization's tenant-owned tables in a database of its own


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


CommaList = Annotated[list[str], NoDecode]

# Types the upload sniffer recognises (modules/files/sniffing.py), and the default allow-list.
SNIFFABLE_UPLOAD_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/json",
    "application/zip",
    "text/html",
    "application/xml",
    "image/svg+xml",
    "application/x-executable",
    "application/octet-stream",
)
DEFAULT_UPLOAD_TYPES = SNIFFABLE_UPLOAD_TYPES[:9]


class SettingsError(Exception):
    """A setting has a bad value; the message is one line naming it."""


# Signature algorithms accepted from external identity providers: asymmetric only (never
# `none`, never HMAC: an HMAC "key" would be the provider's public key, known to anyone).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
)
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")


class AuthProvider(BaseModel):
    """One external OIDC issuer (an item of `AUTH_PROVIDERS`, camelCase or snake_case keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    issuer: str
    audience: list[str]
    jwks_url: str | None = Field(default=None, validation_alias=AliasChoices("jwksUrl", "jwks_url"))
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    email_claim: str = Field(
        default="email", validation_alias=AliasChoices("emailClaim", "email_claim")
    )
    email_verified_claim: str | None = Field(
        default="email_verified",
        validation_alias=AliasChoices("emailVerifiedClaim", "email_verified_claim"),
    )
    first_name_claim: str | None = Field(
        default="given_name", validation_alias=AliasChoices("firstNameClaim", "first_name_claim")
    )
    last_name_claim: str | None = Field(
        default="family_name", validation_alias=AliasChoices("lastNameClaim", "last_name_claim")
    )
    # Lifecycle webhooks: `svix` (Clerk) or `hmac` (generic HMAC-SHA256), with their secret.
    webhook_scheme: Literal["svix", "hmac"] | None = Field(
        default=None, validation_alias=AliasChoices("webhookScheme", "webhook_scheme")
    )
    webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("webhookSecret", "webhook_secret")
    )

    @field_validator("name")
    @classmethod
    def _slug_name(cls, value: str) -> str:
        if not PROVIDER_NAME.match(value):
            raise ValueError("a provider name is lowercase letters, digits and '-' (1-50)")
        return value

    @field_validator("issuer", "jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("issuer and jwksUrl must be http(s) URLs")
        return value

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_more_audiences(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("audience")
    @classmethod
    def _audience_given(cls, value: list[str]) -> list[str]:
        if not value or not all(value):
            raise ValueError("audience must name at least one non-empty audience")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if unknown or not value:
            raise ValueError(
                f"algorithms must be among {', '.join(ASYMMETRIC_ALGORITHMS)} (got {unknown})"
            )
        return value

    @model_validator(mode="after")
    def _webhook_has_secret(self) -> AuthProvider:
        if (self.webhook_scheme is None) != (self.webhook_secret is None):
            raise ValueError("webhookScheme and webhookSecret go together")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    env: Environment = Environment.DEVELOPMENT
    debug: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    var_dir: Path = Path("./var")

    database_url: str = "sqlite+aiosqlite:///./var/tenantry.db"
    # A steady pool and no overflow: overflow connections are opened and closed per burst
    # (a TCP + auth handshake each); past the pool, requests wait their turn in-process.
    database_pool_size: int = Field(default=20, ge=1, le=200)
    database_max_overflow: int = Field(default=0, ge=0, le=200)
    database_pool_timeout: float = Field(default=10.0, gt=0)
    database_statement_timeout_ms: int = Field(default=30_000, ge=0)
    database_echo: bool = False
    # PostgreSQL only: the role row-level security applies to (docs/tenancy.md). MariaDB
    # has no row-level security, so the setting is refused there.
    database_app_role: str | None = None
    # Offset pages stop at this many rows (page * limit): deeper, PostgreSQL reads and
    # drops every skipped row, so a client walks further with `cursor` (keyset) instead.
    max_offset_rows: int = Field(default=10_000, ge=100, le=10_000_000)
    # A search's `meta.total` counts matches up to this many; beyond, the total is this
    # cap and `meta.totalIsEstimate` is true (counting every match of a common word in a
    # 200,000-task organization costs more than the page itself).
    search_count_cap: int = Field(default=1_000, ge=10, le=10_000_000)
    auto_migrate: bool | None = None
    # Database per tenant (docs/tenancy.md, "Database per tenant"): the servers tenant
    # databases are placed on (PostgreSQL server URLs, or for SQLite one directory), the
    # connections one process may hold to the tenant databases of one server (engines of
    # idle tenants are closed to stay within it), each tenant database's pool, and how long
    # an unused tenant engine is kept.
    tenancy_mode: TenancyMode = TenancyMode.SHARED
    tenant_database_servers: CommaList = Field(default_factory=list)
    tenant_database_pool_size: int = Field(default=5, ge=1, le=100)
    tenant_database_connection_budget: int = Field(default=40, ge=1, le=10_000)
    tenant_engine_idle_seconds: float = Field(default=300.0, ge=1, le=86_400)
    # How long a process trusts the tenant location it read from the registry: a restore
    # or move waits this long after refusing writes and after switching, so every process
    # has re-read the registry (modules/tenants/operations.py).
    tenant_location_ttl_seconds: float = Field(default=2.0, gt=0, le=60)

    redis_url: str | None = None
    redis_key_prefix: str = "tenantry:"
    secret_key: SecretStr | None = None

    cors_origins: CommaList = Field(default_factory=list)
    trusted_proxies: CommaList = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    # A request body must arrive within the deadline and, after the grace period, at the
    # minimum rate (408 otherwise): a client trickling bytes holds a socket and a coroutine,
    # never a database connection, but it must not hold them for as long as it likes.
    body_read_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    body_read_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    body_min_bytes_per_second: int = Field(default=1024, ge=0)
    # Uploads in flight at once (429 beyond): per process without Redis, shared with it.
    upload_max_concurrent_per_user: int = Field(default=4, ge=1, le=1000)
    upload_max_concurrent_per_org: int = Field(default=16, ge=1, le=10000)
    # Real-time events (docs/events.md): open streams per user and per organization (429
    # beyond), the replay buffer of each organization (events and age), the keep-alive
    # comment, and how often an open stream checks its caller may still read.
    events_max_streams_per_user: int = Field(default=5, ge=1, le=1000)
    events_max_streams_per_org: int = Field(default=200, ge=1, le=100_000)
    events_buffer_size: int = Field(default=1000, ge=10, le=100_000)
    events_buffer_seconds: float = Field(default=3600.0, ge=10, le=7 * 24 * 3600)
    events_ping_seconds: float = Field(default=15.0, gt=0, le=300)
    events_recheck_seconds: float = Field(default=5.0, gt=0, le=10)

    rate_limit_enabled: bool = True
    # With Redis: membership and revocation facts are copied into each process and dropped
    # over pub/sub; a copy is trusted only while the subscription proved live this recently
    # (the bound on what another process may still serve after a revocation). 0: no copies.
    near_cache_stale_seconds: float = Field(default=0.5, ge=0, le=1.0)
    # How often a process sends its count of the plan's per-organization API rate to Redis
    # and learns the others' (the bound on over-admission across processes).
    plan_rate_sync_seconds: float = Field(default=1.0, gt=0, le=10.0)

    # Backends chosen by URL (unset = the embedded default under VAR_DIR).
    mail_url: str | None = None
    mail_from: str = "no-reply@example.com"
    mail_from_name: str = "tenantry"
    storage_url: str | None = None
    storage_access_key_id: str | None = None
    storage_secret_access_key: SecretStr | None = None
    storage_presign_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    jobs_embedded_worker: bool | None = None
    jobs_concurrency: int = Field(default=4, ge=1, le=256)
    jobs_lease_seconds: float = Field(default=60.0, ge=0.5, le=86_400)
    jobs_poll_seconds: float = Field(default=1.0, ge=0.05, le=3_600)
    jobs_shutdown_timeout: float = Field(default=30.0, ge=0, le=3_600)
    # A worker silent this long is dead: its jobs are requeued without waiting for the lease.
    # It beats every fifth of it, so its jobs are back in the queue within 1.2 x this (9.6 s)
    # of its death.
    jobs_worker_timeout_seconds: float = Field(default=8.0, ge=1.0, le=3_600)
    jobs_retry_base_seconds: float = Field(default=10.0, ge=0, le=86_400)
    jobs_retry_max_seconds: float = Field(default=3_600.0, ge=0, le=7 * 86_400)
    jobs_import: CommaList = Field(default_factory=list)

    # identity (modules/auth, modules/users): token lifetimes, password hashing cost, MFA
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=3600, le=90 * 24 * 3600)
    password_reset_ttl_seconds: int = Field(default=3600, ge=300, le=24 * 3600)
    email_verification_ttl_seconds: int = Field(default=48 * 3600, ge=3600, le=30 * 24 * 3600)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    # `iss` and `aud` of access tokens, required and checked on every verification: a
    # token minted for another service sharing the key (or another deployment) is refused.
    jwt_issuer: str = Field(default="tenantry", min_length=1, max_length=256)
    jwt_audience: str = Field(default="tenantry", min_length=1, max_length=256)
    # External identity providers (modules/identity, docs/auth.md): a JSON list of
    # `AuthProvider`; `AUTH_LOCAL=false` turns local register/login/password/MFA off (404).
    auth_providers: list[AuthProvider] = Field(default_factory=list)
    auth_local: bool = True
    auth_jwks_ttl_seconds: int = Field(default=300, ge=10, le=24 * 3600)
    auth_clock_leeway_seconds: int = Field(default=30, ge=0, le=60)
    auth_webhook_tolerance_seconds: int = Field(default=300, ge=10, le=3600)
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=64, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=16)
    # Hashes computed at once per process: below the core count, so a burst of logins
    # always leaves a core to the event loop (reads keep their latency).
    password_hash_concurrency: int = Field(
        default_factory=lambda: default_hash_concurrency(), ge=1, le=64
    )
    # Logins (and other hashing requests) waiting for a slot beyond those running; one more
    # gets 503 with Retry-After at once instead of waiting seconds for its turn.
    password_hash_queue: int = Field(default=64, ge=0, le=10_000)
    mfa_issuer: str = Field(default="tenantry", min_length=1, max_length=64)
    # Base URL of the web app that receives emailed links (/reset-password, /verify-email).
    app_url: str = "http://localhost:3000"
    rate_limit_login: str = "5/minute"
    rate_limit_login_ip: str = "30/minute"
    rate_limit_auth: str = "5/minute"

    # auth flows (modules/auth): refresh-token reuse grace, per-account login back-off
    # Presenting a just-rotated refresh token again within this many seconds returns the
    # same successor (two tabs refreshing at once); later, the family is revoked. 0 = off.
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=300)
    # Failed logins for one email (any IP) before each further attempt must wait a delay
    # that doubles from LOGIN_BACKOFF_BASE_SECONDS up to LOGIN_BACKOFF_MAX_SECONDS.
    login_backoff_free_attempts: int = Field(default=5, ge=1, le=1000)
    login_backoff_base_seconds: int = Field(default=1, ge=1, le=3600)
    login_backoff_max_seconds: int = Field(default=300, ge=1, le=24 * 3600)
    # Failures are forgotten this long after the first one of a series (and at a success).
    login_backoff_window_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    # files (modules/files): content types accepted by uploads, sniffed from the bytes
    upload_allowed_types: CommaList = Field(default_factory=lambda: list(DEFAULT_UPLOAD_TYPES))
    # organizations (modules/orgs): trial length of a new organization, invitation lifetime
    trial_days: int = Field(default=30, ge=1, le=365)
    invitation_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=3600, le=30 * 24 * 3600)
    # invitations (and so invitation emails) one organization may send in any hour
    invitations_per_org_per_hour: int = Field(default=50, ge=1, le=100_000)

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.CONSOLE

    # operations: who may scrape /metrics, whether /docs and /openapi.json are served,
    # how long `serve` lets in-flight requests finish on SIGTERM
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    # per-tenant metrics: organizations with a label of their own (the rest: "other"); 0 = off
    tenant_metrics_top_n: int = Field(default=20, ge=0, le=1000)
    docs_enabled: bool = True
    graceful_shutdown_seconds: float = Field(default=30.0, gt=0, le=3_600)

    @field_validator(
        "cors_origins",
        "trusted_proxies",
        "jobs_import",
        "upload_allowed_types",
        "tenant_database_servers",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_METRICS_TOKEN_LENGTH} characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://", MARIADB_SCHEME)):
            raise ValueError(
                f"must start with sqlite+aiosqlite://, postgresql+asyncpg:// or {MARIADB_SCHEME}"
            )
        return value

    @model_validator(mode="after")
    def _app_role_is_postgresql_only(self) -> Settings:
        if self.is_mariadb and self.database_app_role is not None:
            raise ValueError(
                "DATABASE_APP_ROLE: the PostgreSQL role row-level security applies to; "
                "MariaDB has no row-level security (docs/tenancy.md), leave it unset"
            )
        return self

    @field_validator("database_app_role")
    @classmethod
    def _plain_role_name(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("must be a lowercase PostgreSQL role name like tenantry_app")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("app_url")
    @classmethod
    def _app_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL like https://app.example.com")
        return value.rstrip("/")

    @field_validator("rate_limit_login", "rate_limit_login_ip", "rate_limit_auth")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate like 5/minute") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or CIDR range") from None
        return value

    @field_validator("mail_url")
    @classmethod
    def _known_mail(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("file://", "smtp://", "smtps://")):
            raise ValueError("must start with file://, smtp:// or smtps://")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_an_address(cls, value: str) -> str:
        from email_validator import EmailNotValidError, validate_email

        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"is not a valid email address ({exc})") from None

    @field_validator("mail_from_name")
    @classmethod
    def _one_line_name(cls, value: str) -> str:
        if any(char in value for char in "\r\n\x00"):
            raise ValueError("must be a single line")
        return value.strip()

    @field_validator("storage_url")
    @classmethod
    def _known_storage(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        return value

    @field_validator("upload_allowed_types")
    @classmethod
    def _sniffable_types(cls, value: list[str]) -> list[str]:
        types = [item.lower() for item in value]
        unknown = [item for item in types if item not in SNIFFABLE_UPLOAD_TYPES]
        if unknown:
            raise ValueError(
                f"unknown type(s) {', '.join(unknown)}; known: {', '.join(SNIFFABLE_UPLOAD_TYPES)}"
            )
        if not types:
            raise ValueError("must list at least one type")
        return types

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_urls(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @model_validator(mode="after")
    def _body_deadline_is_coherent(self) -> Settings:
        if self.body_read_grace_seconds > self.body_read_timeout_seconds:
            raise ValueError("BODY_READ_GRACE_SECONDS must not exceed BODY_READ_TIMEOUT_SECONDS")
        if self.upload_max_concurrent_per_user > self.upload_max_concurrent_per_org:
            raise ValueError(
                "UPLOAD_MAX_CONCURRENT_PER_USER must not exceed UPLOAD_MAX_CONCURRENT_PER_ORG"
            )
        return self

    @model_validator(mode="after")
    def _providers_are_distinct(self) -> Settings:
        names = [p.name for p in self.auth_providers]
        issuers = [p.issuer.rstrip("/") for p in self.auth_providers]
        if len(set(names)) != len(names) or len(set(issuers)) != len(issuers):
            raise ValueError("AUTH_PROVIDERS: each provider needs its own name and issuer")
        if self.jwt_issuer.rstrip("/") in issuers:
            raise ValueError("AUTH_PROVIDERS: an issuer must differ from JWT_ISSUER")
        if not self.auth_local and not self.auth_providers:
            raise ValueError("AUTH_LOCAL=false needs at least one of AUTH_PROVIDERS")
        return self

    @model_validator(mode="after")
    def _tenant_databases_are_coherent(self) -> Settings:
        if self.tenancy_mode is not TenancyMode.DATABASE:
            return self
        if self.is_mariadb:
            raise ValueError("TENANCY_MODE=database needs PostgreSQL or SQLite, not MariaDB")
        for server in self.tenant_database_servers:
            if self.is_sqlite and server.startswith(("postgresql", "mariadb")):
                raise ValueError(
                    "TENANT_DATABASE_SERVERS: with a SQLite DATABASE_URL give directories "
                    f"for the tenant files, not {server.split('://', 1)[0]}://"
                )
            if not self.is_sqlite and not server.startswith("postgresql+asyncpg://"):
                raise ValueError(
                    "TENANT_DATABASE_SERVERS: each server must be a postgresql+asyncpg:// URL "
                    "like DATABASE_URL's"
                )
        if len(set(self.tenant_database_servers)) != len(self.tenant_database_servers):
            raise ValueError("TENANT_DATABASE_SERVERS: a server is listed twice")
        if self.tenant_database_connection_budget < self.tenant_database_pool_size:
            raise ValueError(
                "TENANT_DATABASE_CONNECTION_BUDGET must be at least TENANT_DATABASE_POOL_SIZE"
            )
        return self

    @property
    def database_per_tenant(self) -> bool:
        return self.tenancy_mode is TenancyMode.DATABASE

    @property
    def tenant_servers(self) -> list[str]:
        """Where tenant databases go: TENANT_DATABASE_SERVERS, else DATABASE_URL's own
        server (PostgreSQL) or `VAR_DIR/tenants` (SQLite)."""
        if self.tenant_database_servers:
            return list(self.tenant_database_servers)
        if self.is_sqlite:
            return [str(self.var_dir / "tenants")]
        return [self.database_url.rsplit("/", 1)[0] + "/postgres"]

    @model_validator(mode="after")
    def _login_backoff_bounds(self) -> Settings:
        if self.login_backoff_max_seconds < self.login_backoff_base_seconds:
            raise ValueError(
                "LOGIN_BACKOFF_MAX_SECONDS must be at least LOGIN_BACKOFF_BASE_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.env is not Environment.PRODUCTION:
            return self
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} random characters "
                "in production (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.is_sqlite:
            raise ValueError(
                "DATABASE_URL must point to PostgreSQL or MariaDB in production, not SQLite"
            )
        if self.debug:
            raise ValueError("DEBUG must be false in production")
        if "*" in self.cors_origins:
            raise ValueError("CORS_ORIGINS must list explicit origins in production, not *")
        if self.password_hash_memory_kib < MIN_PRODUCTION_HASH_MEMORY_KIB:
            raise ValueError(
                f"PASSWORD_HASH_MEMORY_KIB must be at least {MIN_PRODUCTION_HASH_MEMORY_KIB} "
                "in production (argon2id, OWASP minimum)"
            )
        if not self.effective_mail_url.startswith(("smtp://", "smtps://")):
            raise ValueError(
                "MAIL_URL must point to an SMTP server in production "
                "(smtp://user:pass@host:587?starttls=1), not the file backend"
            )
        if self.database_app_role is None and not self.is_mariadb:
            raise ValueError(
                "DATABASE_APP_ROLE must be set in production so row-level security applies: "
                "DATABASE_APP_ROLE=tenantry_app (the role `tenantry migrate` creates; the "
                "connecting user usually owns the tables or is a superuser, and those skip "
                "RLS; see docs/tenancy.md)"
            )
        insecure = [p.name for p in self.auth_providers if not _is_https(p.issuer, p.jwks_url)]
        if insecure:
            raise ValueError(
                f"AUTH_PROVIDERS: issuer and jwksUrl must be https:// in production ({insecure})"
            )
        if self.metrics_token is None and not self.metrics_public:
            raise ValueError(
                "METRICS_TOKEN must be set in production (scrapers send "
                "Authorization: Bearer <token> to /metrics; python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'), or METRICS_PUBLIC=true when /metrics "
                "is reachable only from a trusted network"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_mariadb(self) -> bool:
        return self.database_url.startswith(MARIADB_SCHEME)

    @property
    def effective_mail_url(self) -> str:
        return self.mail_url or f"file://{self.var_dir / 'mail'}"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or f"file://{self.var_dir / 'storage'}"

    @property
    def runs_embedded_worker(self) -> bool:
        """`tenantry serve` runs jobs in-process unless told not to (default: without Redis)."""
        if self.jobs_embedded_worker is not None:
            return self.jobs_embedded_worker
        return self.redis_url is None

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.env is Environment.DEVELOPMENT

    def secret(self) -> str:
        """The application secret; in development a random one persisted under `var_dir`."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        key = _persisted_dev_secret(self.var_dir)
        self.secret_key = SecretStr(key)
        return key


def _is_https(*urls: str | None) -> bool:
    return all(url is None or url.startswith("https://") for url in urls)


def _persisted_dev_secret(var_dir: Path) -> str:
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings; raise `SettingsError` with one line naming the culprit."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "invalid setting " + "; ".join(problems)
