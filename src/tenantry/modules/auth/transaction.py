"""Security writes that must survive the error they cause.

A rotated refresh token presented again revokes its family *and* answers 401; five wrong
MFA codes lock verification *and* answer 401. The request's unit of work rolls back on
any error, so these flows run in a transaction of their own: the work raises
`CommitThenRaise(error)`, the transaction commits, then `error` is raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import Database
from tenantry.core.errors import AppError

T = TypeVar("T")


class CommitThenRaise(Exception):
    def __init__(self, error: AppError) -> None:
        super().__init__(error.message)
        self.error = error


async def run_committing_failures(
    database: Database, work: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    failure: AppError | None = None
    async with database.transaction() as session:
        try:
            return await work(session)
        except CommitThenRaise as exc:
            failure = exc.error
    raise failure
