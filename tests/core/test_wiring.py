"""Session wiring (core/db.py): each Database's sessions reach that database's services."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tenantry.config import Settings
from tenantry.core.db import Database, Wired, wiring_of

NAME: Wired[str] = Wired("a probe")


async def test_two_databases_in_one_process_wire_their_own_services(
    make_settings: Callable[..., Settings],
) -> None:
    first, second = Database(make_settings()), Database(make_settings())
    try:
        first.wiring.provide(NAME, "first")
        second.wiring.provide(NAME, "second")
        async with first.session() as a, second.session(write=False) as b:
            assert wiring_of(a).get(NAME) == "first"
            assert wiring_of(b).get(NAME) == "second"
            assert wiring_of(a.sync_session).get(NAME) == "first"  # listeners get sync ones
        first.wiring.provide(NAME, None)
        async with first.session() as a:
            assert wiring_of(a).get(NAME) is None
    finally:
        await first.dispose()
        await second.dispose()


def test_a_session_no_database_made_has_nothing_wired() -> None:
    assert wiring_of(Session()).get(NAME) is None
    assert wiring_of(AsyncSession()).get(NAME) is None
