"""The unit of work: one database session per request, committed once, before the response.

`UnitOfWorkRoute` wraps every API endpoint. The session is opened lazily by the first
dependency that asks for it (`SessionDep`); after the endpoint has produced its response
— but before a byte is sent — the route commits when the status is below 400 and rolls
back otherwise. A failing commit therefore becomes an error response, never a 201 for
data that was not saved. (A commit in a `yield` dependency's exit would run after the
response is sent in current FastAPI.) Callbacks registered with `after_commit` run
once the commit succeeded: that is how jobs reach their transport only for real rows.
Callbacks registered with `after_rollback` run when the transaction did not commit (an
error response, an exception, a failing commit): that is how an uploaded object whose row
was never saved is removed from storage again. A route that waits on its client midway
(an upload) calls `end_transaction` first, so no connection is held while it waits.

A deadlock or lock wait timeout (`is_conflict_abort`: the database threw the transaction
away because of a concurrent one) runs the whole unit of work once more from the start —
dependencies, endpoint, commit — when that is safe: nothing was sent yet (the response
only leaves after the commit) and the request's body is still at hand (a JSON body
FastAPI buffered, or none). A route that streams its body (an upload, the only user of
`end_transaction`) is never re-run. A second abort is the client's 503 (core/errors.py).
The retry is here and nowhere else: docs/decisions.md (MariaDB, "Deadlock / lock wait
timeout") says why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from tenantry.core.db import Database
from tenantry.core.errors import UnsupportedMediaType, is_conflict_abort
from tenantry.core.metrics import DatabaseTime
from tenantry.services import services_of

log = logging.getLogger("tenantry.uow")

AfterCommit = Callable[[], Awaitable[None]]
_SESSION = "db_session"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread (a thread hand-off per call, per request).


async def get_database(request: Request) -> Database:
    return services_of(request).database


async def get_session(request: Request) -> AsyncSession:
    """The request's session, created on first use (write-locking on SQLite for writes)."""
    session: AsyncSession | None = getattr(request.state, _SESSION, None)
    if session is None:
        session = services_of(request).database.session(write=request.method not in _READ_METHODS)
        session.info["after_commit"] = []
        setattr(request.state, _SESSION, session)
    return session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this session's transaction has committed (dropped on rollback)."""
    session.info.setdefault("after_commit", []).append(callback)


def after_rollback(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` if this session's transaction ends without committing."""
    session.info.setdefault("after_rollback", []).append(callback)


async def end_transaction(session: AsyncSession) -> None:
    """Commit what the request did so far and give its connection back to the pool.

    For a route that must wait on the client in the middle (an upload's body) without
    holding a connection, a transaction or a lock meanwhile: the session's next statement
    begins a new transaction, which the unit of work commits or rolls back as usual.
    """
    with DatabaseTime():
        await session.commit()
    await run_after_commit(session)
    session.info["after_commit"] = []


async def run_after_commit(session: AsyncSession) -> None:
    session.info.pop("after_rollback", None)
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:  # the data is committed; a failed notification is retried by sweeps
            log.exception("after-commit callback failed")


async def run_after_rollback(session: AsyncSession) -> None:
    session.info.pop("after_commit", None)
    callbacks: list[AfterCommit] = session.info.pop("after_rollback", [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:  # compensation is best effort; the log line names what is left over
            log.exception("after-rollback callback failed")


class UnitOfWorkRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        expects_json = self._expects_json_body()

        async def unit_of_work(request: Request) -> Response:
            if expects_json:
                _require_json(request)
            try:
                return await _run_once(handler, request)
            except Exception as exc:
                if not (is_conflict_abort(exc) and (expects_json or not _has_body(request))):
                    raise
                log.warning(
                    "the database aborted the transaction (%s); running the request once more",
                    type(getattr(exc, "orig", exc)).__name__,
                )
            return await _run_once(handler, request)

        return unit_of_work

    def _expects_json_body(self) -> bool:
        if self.body_field is None:
            return False
        from fastapi.params import Form

        return not any(isinstance(p.field_info, Form) for p in self.dependant.body_params)


async def _run_once(
    handler: Callable[[Request], Coroutine[Any, Any, Response]], request: Request
) -> Response:
    """The endpoint with its dependencies, then the commit (or rollback) of its session."""
    try:
        response = await handler(request)
    except BaseException:
        await _finish(request, commit=False)
        raise
    await _finish(request, commit=response.status_code < 400)
    return response


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )


def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None and not _has_body(request):
        return
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("Send the request body as application/json")


async def _finish(request: Request, *, commit: bool) -> None:
    session: AsyncSession | None = getattr(request.state, _SESSION, None)
    if session is None:
        return
    setattr(request.state, _SESSION, None)
    try:
        with DatabaseTime():  # COMMIT/ROLLBACK are round trips without a cursor
            if commit:
                await session.commit()
            else:
                await session.rollback()
    except BaseException:
        await session.close()
        await run_after_rollback(session)
        raise
    await session.close()
    if commit:
        await run_after_commit(session)
    else:
        await run_after_rollback(session)
