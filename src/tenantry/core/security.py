"""Password hashing, access JWTs, opaque tokens and secret encryption.

- Passwords: argon2id through pwdlib (cost from settings), bcrypt hashes imported from a
  NestJS/Prisma database still verify and are flagged for re-hashing. Hashing runs in a
  bounded, low-priority thread pool with a bounded queue (503 beyond), so a burst of
  logins never stalls the event loop nor the reads it serves.
- Access tokens: JWT signed with a key derived from `SECRET_KEY`; verification needs no
  database (algorithm allow-list, `exp`/`iat`/`typ` required, `iss`/`aud` required and
  equal to `JWT_ISSUER`/`JWT_AUDIENCE`, `none` refused).
- Opaque tokens (refresh, reset, verification): 256 random bits, stored only as SHA-256.
- Secrets at rest (the TOTP seed): AES-256-GCM with a key derived from `SECRET_KEY` (HKDF).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from tenantry.config import Settings
from tenantry.core.errors import RequestTimeout, ServiceUnavailable

ACCESS_TOKEN_TYPE = "access"
BCRYPT_MAX_BYTES = 72
_ALLOWED_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_T = TypeVar("_T")
_VERIFIED_TOKENS_KEPT = 10_000  # ~4 MB at most: one entry per live access token seen


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose from the application secret (HKDF-SHA256)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
    return hkdf.derive(secret.encode())


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_opaque_token() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


Abandoned = Callable[[], Awaitable[bool]]
"""Whether the client of a request has gone (`Request.is_disconnected`)."""


class ClientGone(RequestTimeout):
    """The client left while its login waited for a hash (nobody reads this answer)."""

    message = "The client disconnected before its request was processed"


class HashingBusy(ServiceUnavailable):
    """503: more logins wait for a password hash than `PASSWORD_HASH_QUEUE` allows."""

    message = "Too many sign-ins at once; try again shortly"


# Hashing threads run at this nice value (Linux: per thread, inherited by the threads
# argon2 starts for its lanes): when a burst of logins and reads meet on busy cores, the
# scheduler serves the event loop first, so reads keep their latency and logins wait.
HASH_THREAD_NICENESS = 10


def _lower_thread_priority() -> None:
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + HASH_THREAD_NICENESS))
    except (AttributeError, OSError):  # not Linux, or not permitted: hash at normal priority
        pass


class PasswordHasher:
    """argon2id hashing off the event loop, in a thread pool of its own.

    At most `PASSWORD_HASH_CONCURRENCY` hashes run at once (below the core count by
    default: an argon2 hash is ~0.1-0.3 s of pure CPU and 64 MiB), at a lower thread
    priority than the event loop, and at most `PASSWORD_HASH_QUEUE` more wait for a
    thread; beyond that a request fails at once with 503 + Retry-After (`HashingBusy`)
    instead of queueing for seconds while its client has long given up.
    """

    def __init__(self, settings: Settings) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )
        self._hash = PasswordHash((self._argon2, BcryptHasher()))
        self._admitted_max = settings.password_hash_concurrency + settings.password_hash_queue
        self._admitted = 0  # running or waiting for a thread (event-loop only: no lock)
        # Idle threads end when the hasher is garbage collected (ThreadPoolExecutor's own
        # weak reference), so apps built and dropped by tests leave nothing behind.
        self._pool = ThreadPoolExecutor(
            max_workers=settings.password_hash_concurrency,
            thread_name_prefix="password-hash",
            initializer=_lower_thread_priority,
        )
        self._slots = asyncio.Semaphore(settings.password_hash_concurrency)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await self._run(None, self._hash.hash, password)

    async def verify(
        self, password: str, hashed: str, *, abandoned: Abandoned | None = None
    ) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one should be replaced — bcrypt or old cost).

        `abandoned` is asked once a thread is free: when the client has gone meanwhile,
        `ClientGone` is raised instead of spending a hash on nobody (a login client that
        timed out and retried would otherwise be hashed for twice)."""
        return await self._run(abandoned, self._verify_and_update, password, hashed)

    def check_capacity(self) -> None:
        """Raise `HashingBusy` now if a hash would be refused: a login calls this before
        its database lookup, so a refused login costs no database round trip."""
        if self._admitted >= self._admitted_max:
            raise HashingBusy(retry_after=1)

    async def _run(self, abandoned: Abandoned | None, work: Callable[..., _T], *args: Any) -> _T:
        self.check_capacity()
        self._admitted += 1
        try:
            async with self._slots:  # the pool has as many threads: it never queues itself
                if abandoned is not None and await abandoned():
                    raise ClientGone()
                return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        finally:
            self._admitted -= 1

    async def waste_time(self, password: str, *, abandoned: Abandoned | None = None) -> None:
        """Spend what a real verification costs (login of an unknown email)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(new_opaque_token())
        await self.verify(password, self._dummy_hash, abandoned=abandoned)

    def _verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        if BcryptHasher.identify(hashed) and len(password.encode()) > BCRYPT_MAX_BYTES:
            # bcrypt only ever saw 72 bytes; never accept a longer password by its prefix.
            return False, None
        try:
            return self._hash.verify_and_update(password, hashed)
        except UnknownHashError:
            return False, None  # an unusable hash (erased account): nothing can match


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    # The local session (refresh-token family); None for an external provider's token,
    # whose account is read from the database on each use (modules/identity).
    session_id: uuid.UUID | None
    role: str
    issued_at: float
    expires_at: float
    token_id: str


class InvalidAccessToken(Exception):
    def __init__(self, *, expired: bool = False) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


class TokenCodec:
    """Issue and verify access JWTs; nothing here touches the database."""

    def __init__(self, settings: Settings) -> None:
        if settings.jwt_algorithm not in _ALLOWED_ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {settings.jwt_algorithm}")
        self._key = derive_key(settings.secret(), "tenantry/jwt-signing", 64)
        self._algorithm = settings.jwt_algorithm
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl_seconds = settings.access_token_ttl_seconds
        # Tokens already verified, by their exact text: a client sends the same token on
        # every request for up to `ttl_seconds`, and a hit skips the HMAC and the JSON
        # parsing (expiry is still checked on every use; revocation is the caller's).
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()

    def issue(self, *, user_id: uuid.UUID, session_id: uuid.UUID, role: str) -> str:
        now = time.time()  # sub-second iat: logout-all, then a new login in the same second
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role,
            "typ": ACCESS_TOKEN_TYPE,
            "iat": now,
            "exp": int(now) + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm)

    def verify(self, token: str) -> AccessClaims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            self._verified[token] = claims
            if len(self._verified) > _VERIFIED_TOKENS_KEPT:
                self._verified.popitem(last=False)
        if claims.expires_at <= time.time():
            self._verified.pop(token, None)
            raise InvalidAccessToken(expired=True)
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self._algorithm:
                raise InvalidAccessToken
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "sid", "typ", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAccessToken(expired=True) from None
        except jwt.PyJWTError:
            raise InvalidAccessToken from None
        if claims.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidAccessToken
        try:
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                session_id=uuid.UUID(str(claims["sid"])),
                role=str(claims.get("role", "")),
                issued_at=float(claims["iat"]),
                expires_at=float(claims["exp"]),
                token_id=str(claims["jti"]),
            )
        except (ValueError, TypeError):
            raise InvalidAccessToken from None


class SecretBox:
    """Encrypt small secrets at rest: AES-256-GCM, random nonce, versioned text format."""

    _VERSION = "v1"

    def __init__(self, settings: Settings) -> None:
        self._aead = AESGCM(derive_key(settings.secret(), "tenantry/secret-box"))

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self._VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, context: str) -> str:
        version, _, body = token.partition(":")
        if version != self._VERSION:
            raise ValueError("unknown secret format")
        raw = base64.urlsafe_b64decode(body.encode())
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise ValueError("secret cannot be decrypted with this SECRET_KEY") from None


class CodeHasher:
    """Keyed hashes for short codes (MFA recovery codes): fast, and useless without the key."""

    def __init__(self, settings: Settings) -> None:
        self._key = derive_key(settings.secret(), "tenantry/code-hash")

    def hash(self, code: str) -> str:
        return hmac.new(self._key, code.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Security:
    """Everything above, built once per app from its settings (`Services.security`)."""

    passwords: PasswordHasher
    tokens: TokenCodec
    secrets: SecretBox
    codes: CodeHasher

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        return cls(
            passwords=PasswordHasher(settings),
            tokens=TokenCodec(settings),
            secrets=SecretBox(settings),
            codes=CodeHasher(settings),
        )
