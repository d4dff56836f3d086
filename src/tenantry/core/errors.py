"""One error shape for everything the service can answer with.

Services raise `AppError` subclasses; the handlers below turn those, request validation
errors, database errors and unexpected exceptions into the error envelope of API.md.
Submitted values are never echoed back (a password must not come back in an error).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from tenantry.core.responses import JSONResponse, utc_timestamp

log = logging.getLogger("tenantry.errors")

Details = Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
RETRY_AFTER_SECONDS = 5
# PostgreSQL SQLSTATEs of an outage, not of a bad request: a connection failure (class 08),
# too many connections or no resources left (class 53), a server starting or shutting down
# (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), a statement that
# ran past `statement_timeout` or was cancelled (57014).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "57014")
# A deadlock (40P01), a serialization failure (40001) or a lock wait past `lock_timeout`
# (55P03): the transaction is lost, nothing was saved, and the same unit of work can
# simply run again (core/routing.py retries it once; then 503).
_CONFLICT_ABORT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
# MariaDB error numbers (asyncmy raises them as `args[0]`): a duplicate key (1062, and
# 1586 for a duplicate in a unique index named by key) is PostgreSQL's 23505; a missing
# parent (1452) or a parent still referenced (1451) its 23503; a lock wait past
# `innodb_lock_wait_timeout` (1205) and a deadlock (1213) roll back and are worth sending
# again; a statement past `max_statement_time` (1969); a server gone or unreachable (2002
# socket, 2003 TCP, 2006 gone away, 2013 lost during a query, 2055 lost at handshake,
# 1927 connection killed, 1053 server shutdown, 1040 too many connections).
_MARIADB_DUPLICATE = frozenset({1062, 1586})
_MARIADB_FOREIGN_KEY = frozenset({1451, 1452})
_MARIADB_CONFLICT_ABORT = frozenset({1205, 1213})
_MARIADB_STATEMENT_TIMEOUT = 1969
_MARIADB_UNAVAILABLE = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
CONFLICT_ABORTED = (
    "The database aborted this change because it conflicted with a concurrent one; "
    "nothing was saved, send it again"
)


class AppError(Exception):
    status_code: int = 500
    code: str = "internal_error"
    message: str = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Details = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"
    message = "Bad request"


class ValidationFailed(AppError):
    status_code = 400
    code = "validation_error"
    message = "Request validation failed"


class InvalidToken(BadRequest):
    code = "invalid_token"
    message = "The token is invalid, expired or already used"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    message = "Authentication required"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class PaymentRequired(AppError):
    status_code = 402
    code = "plan_limit_reached"
    message = "Your plan does not allow this"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    message = "You do not have permission to do this"


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "Not found"


class MethodNotAllowed(AppError):
    status_code = 405
    code = "method_not_allowed"
    message = "Method not allowed"


class RequestTimeout(AppError):
    status_code = 408
    code = "request_timeout"
    message = "The request body did not arrive in time"


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    message = "Conflict"


class VersionConflict(Conflict):
    code = "version_conflict"
    message = "The record was changed by someone else; reload it and try again"


class PreconditionFailed(AppError):
    status_code = 412
    code = "precondition_failed"
    message = "If-Match does not match the current version"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "Request body is too large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
    message = "Unsupported content type"


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "A backing service is unavailable; try again shortly"

    def __init__(
        self, message: str | None = None, *, retry_after: int = RETRY_AFTER_SECONDS, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        # Clients and proxies back off instead of hammering a service that is restarting.
        self.headers.setdefault("Retry-After", str(max(1, retry_after)))


_STATUS_ERRORS: dict[int, type[AppError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_body(
    request_path: str, request_id: str | None, status: int, code: str, message: str, details: Any
) -> dict[str, Any]:
    return {
        "success": False,
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "code": code,
        "message": message,
        "details": details if details is not None else [],
        "path": request_path,
        "requestId": request_id,
        "timestamp": utc_timestamp(),
    }


def error_response(request: Request, error: AppError) -> Response:
    body = error_body(
        request.url.path,
        getattr(request.state, "request_id", None),
        error.status_code,
        error.code,
        error.message,
        error.details,
    )
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """`[{field, message}]` from pydantic errors, without the submitted input."""
    details = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in {"body", "query", "path", "header", "cookie"}:
            loc = loc[1:]
        field = ".".join(loc) if loc else "body"
        message = str(error.get("msg", "Invalid value")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            field, message = "body", "Malformed JSON"
        elif error.get("type") == "extra_forbidden":
            message = "Unknown field"
        details.append({"field": field, "message": message})
    return details


def classify_database_error(exc: sa_exc.DBAPIError) -> AppError:
    """Map a driver error like the seeds' Prisma filter: unique → 409, FK → 400, down → 503."""
    mariadb_code = _mariadb_code(exc.orig)
    if mariadb_code is not None:
        return _classify_mariadb(mariadb_code, exc)
    if isinstance(exc, sa_exc.IntegrityError):
        text = str(exc.orig).lower()
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate == "23505" or "unique" in text:
            return Conflict("A record with these values already exists")
        if sqlstate == "23503" or "foreign key" in text:
            return BadRequest("A referenced record does not exist", code="validation_error")
        return BadRequest("The request violates a data constraint", code="validation_error")
    if exc.connection_invalidated or _is_connection_problem(exc):
        return ServiceUnavailable("The database is unavailable; try again shortly")
    if is_conflict_abort(exc):
        return ServiceUnavailable(CONFLICT_ABORTED)
    sqlstate = _sqlstate(exc.orig)
    if sqlstate == "57014":
        return ServiceUnavailable("The database took too long to answer; try again shortly")
    if sqlstate is not None and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
        return ServiceUnavailable("The database is unavailable; try again shortly")
    return AppError()


def is_conflict_abort(exc: BaseException) -> bool:
    """A deadlock or lock wait timeout (PostgreSQL or MariaDB): the database gave up the
    transaction because of a concurrent one, and running it again may well succeed."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    mariadb_code = _mariadb_code(exc.orig)
    if mariadb_code is not None:
        return mariadb_code in _MARIADB_CONFLICT_ABORT
    return _sqlstate(exc.orig) in _CONFLICT_ABORT_SQLSTATES


def _mariadb_code(error: BaseException | None) -> int | None:
    """The MariaDB error number of an asyncmy error (None for any other driver)."""
    if error is None or not type(error).__module__.startswith("asyncmy"):
        return None
    code = error.args[0] if error.args else None
    return code if isinstance(code, int) else None


def _classify_mariadb(code: int, exc: sa_exc.DBAPIError) -> AppError:
    if code in _MARIADB_DUPLICATE:
        return Conflict("A record with these values already exists")
    if code in _MARIADB_FOREIGN_KEY:
        return BadRequest("A referenced record does not exist", code="validation_error")
    if isinstance(exc, sa_exc.IntegrityError):
        return BadRequest("The request violates a data constraint", code="validation_error")
    if is_conflict_abort(exc):
        return ServiceUnavailable(CONFLICT_ABORTED)
    if code == _MARIADB_STATEMENT_TIMEOUT:
        return ServiceUnavailable("The database took too long to answer; try again shortly")
    if code in _MARIADB_UNAVAILABLE or exc.connection_invalidated:
        return ServiceUnavailable("The database is unavailable; try again shortly")
    return AppError()


def _sqlstate(error: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error (asyncpg's, or SQLAlchemy's adaptation of it)."""
    for candidate in (error, getattr(error, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _is_connection_problem(exc: sa_exc.DBAPIError) -> bool:
    if isinstance(exc, sa_exc.OperationalError) and not _is_postgres(exc):
        return True  # SQLite: unable to open, disk I/O, locked past the busy timeout
    orig = exc.orig
    cause = getattr(orig, "__cause__", None)
    return (
        isinstance(orig, OSError | ConnectionError)
        or isinstance(cause, OSError | ConnectionError)
        or _is_closed_connection(cause)
    )


def _is_closed_connection(error: BaseException | None) -> bool:
    """asyncpg's InterfaceError on a connection the server or the pool already closed."""
    if error is None or type(error).__name__ != "InterfaceError":
        return False
    return "asyncpg" in type(error).__module__ and "closed" in str(error).lower()


def _is_postgres(exc: sa_exc.DBAPIError) -> bool:
    return "asyncpg" in type(exc.orig).__module__ or "asyncpg" in repr(type(exc.orig))


def to_app_error(exc: BaseException) -> AppError | None:
    """The `AppError` an exception stands for, or None when it is a bug (→ 500)."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, sa_exc.DBAPIError):
        error = classify_database_error(exc)
        return None if type(error) is AppError else error
    if isinstance(exc, sa_exc.TimeoutError):
        return ServiceUnavailable("The database is busy; try again shortly")
    if isinstance(exc, TimeoutError):  # a connect or command timeout of the driver
        return ServiceUnavailable("A backing service did not answer in time; try again shortly")
    if isinstance(exc, ConnectionRefusedError | OSError) and _looks_like_connect_failure(exc):
        return ServiceUnavailable()
    code = _mariadb_code(exc)
    if code is not None and code in _MARIADB_UNAVAILABLE | _MARIADB_CONFLICT_ABORT:
        # An asyncmy error that escaped SQLAlchemy's wrapping (raised while connecting).
        return ServiceUnavailable("The database is unavailable; try again shortly")
    if _sqlstate(exc) is not None and _is_driver_error(exc):
        # A driver error that escaped SQLAlchemy's wrapping (e.g. raised while connecting).
        state = _sqlstate(exc) or ""
        if state in _CONFLICT_ABORT_SQLSTATES:
            return ServiceUnavailable(CONFLICT_ABORTED)
        if state.startswith(_UNAVAILABLE_SQLSTATES):
            return ServiceUnavailable("The database is unavailable; try again shortly")
    if _is_closed_connection(exc):
        return ServiceUnavailable("The database is unavailable; try again shortly")
    return None


def _is_driver_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("asyncpg")


def _looks_like_connect_failure(exc: OSError) -> bool:
    return isinstance(exc, ConnectionError) or exc.errno is not None


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (for a 405's `Allow`)."""
    path: str = request.scope["path"]
    root_path: str = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]  # as routes match it (behind a mount or a proxy prefix)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):  # through included routers
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(route.methods or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return error_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, ValidationFailed(details=validation_details(exc.errors())))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error_class = _STATUS_ERRORS.get(exc.status_code, AppError)
        error = error_class(headers=exc.headers)
        if error_class is AppError:
            error.status_code = exc.status_code
            error.code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
            error.message = HTTPStatus(exc.status_code).phrase
        elif exc.status_code == 404:
            error.message = "Route not found"
        elif exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; a path
            # served by several routes (GET, PATCH, DELETE each its own) allows them all.
            error.headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(request, error)

    async def on_known_exception(request: Request, exc: Exception) -> Response:
        error = to_app_error(exc)
        if error is None:
            raise exc
        return error_response(request, error)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(sa_exc.DBAPIError, on_known_exception)
    app.add_exception_handler(sa_exc.TimeoutError, on_known_exception)
    app.add_exception_handler(OSError, on_known_exception)
    for driver_error in _driver_errors():
        app.add_exception_handler(driver_error, on_known_exception)


def _driver_errors() -> tuple[type[Exception], ...]:
    """The drivers' base errors, when installed (they can escape unwrapped)."""
    errors: list[type[Exception]] = []
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    else:
        errors += [asyncpg.PostgresError, asyncpg.InterfaceError]
    try:
        from asyncmy.errors import MySQLError
    except ImportError:  # pragma: no cover - asyncmy is a dependency
        pass
    else:
        errors.append(MySQLError)
    return tuple(errors)
