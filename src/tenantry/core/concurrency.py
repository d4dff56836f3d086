"""Optimistic concurrency for `Versioned` rows: ETag, `If-Match` and a `version` field.

GET answers with `ETag: "<version>"`. A PATCH may carry the version it was based on,
as `If-Match: "<version>"` (a stale one → 412 `precondition_failed`) or as a `version`
field in the body (a stale one → 409 `version_conflict`). The check before the change
catches the common case; the `UPDATE ... WHERE version = :seen` that SQLAlchemy issues
for `Versioned` models catches the race (two writers who read the same version: the
second updates no row and gets the same error).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header, Response
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from tenantry.core.errors import AppError, PreconditionFailed, VersionConflict

_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')

IfMatchHeader = Annotated[
    str | None,
    Header(alias="If-Match", description='The ETag the change is based on, e.g. `"3"`'),
]


def etag(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


def if_match_allows(header: str, version: int) -> bool:
    """RFC 9110 `If-Match`: `*` or a list of strong entity tags (weak ones never match)."""
    if header.strip() == "*":
        return True
    for part in header.split(","):
        match = _ENTITY_TAG.fullmatch(part)
        if match and match.group(1) is None and match.group(2) == str(version):
            return True
    return False


class Expectation:
    """The version a change was based on, and which error a stale one gets."""

    def __init__(self, if_match: str | None, version: int | None) -> None:
        self.if_match = if_match
        self.version = version

    def check(self, current: int) -> None:
        if self.if_match is not None and not if_match_allows(self.if_match, current):
            raise PreconditionFailed(details=[{"field": "If-Match", "message": etag(current)}])
        if self.version is not None and self.version != current:
            raise VersionConflict(details=[{"field": "version", "message": str(current)}])

    def stale_error(self) -> AppError:
        return PreconditionFailed() if self.if_match is not None else VersionConflict()


async def flush_versioned(session: AsyncSession, expectation: Expectation | None = None) -> None:
    """Flush; a row changed by a concurrent transaction since it was read is a 409 (or 412)."""
    try:
        await session.flush()
    except StaleDataError:
        raise (expectation or Expectation(None, None)).stale_error() from None
