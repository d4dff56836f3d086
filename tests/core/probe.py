"""A probe router and table for exercising the HTTP skeleton before business modules exist.

Tests include it into an app of their own; it is not part of the product.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy import ForeignKey, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.responses import StreamingResponse

from tenantry.core.db import NAMING_CONVENTION, new_id
from tenantry.core.errors import Conflict
from tenantry.core.responses import (
    CursorPage,
    Envelope,
    ListQuery,
    Page,
    RequestSchema,
    Schema,
    cursor_page,
    encode_cursor,
    ok,
    page,
)
from tenantry.core.routing import SessionDep, UnitOfWorkRoute


class ProbeBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Gadget(ProbeBase):
    __tablename__ = "probe_gadgets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("probe_gadgets.id"), default=None
    )


class GadgetIn(RequestSchema):
    name: str = Field(min_length=1, max_length=100)
    secret_word: str = Field(min_length=8)
    parent_id: uuid.UUID | None = None


class GadgetOut(Schema):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None


class GadgetQuery(ListQuery):
    sort_fields = ("createdAt", "name")


router = APIRouter(prefix="/api/v1/probe", route_class=UnitOfWorkRoute)


@router.post("/gadgets", status_code=201)
async def create_gadget(body: GadgetIn, session: SessionDep) -> Envelope[GadgetOut]:
    gadget = Gadget(name=body.name, parent_id=body.parent_id)
    session.add(gadget)
    await session.flush()
    return ok(GadgetOut.model_validate(gadget))


@router.post("/gadgets/unflushed", status_code=201)
async def create_gadget_unflushed(body: GadgetIn, session: SessionDep) -> Envelope[GadgetOut]:
    """Adds without flushing: a constraint violation surfaces only at commit."""
    gadget = Gadget(id=new_id(), name=body.name)
    session.add(gadget)
    return ok(GadgetOut(id=gadget.id, name=body.name, parent_id=None))


@router.post("/gadgets/then-fail", status_code=201)
async def create_then_fail(body: GadgetIn, session: SessionDep) -> Envelope[GadgetOut]:
    session.add(Gadget(name=body.name))
    await session.flush()
    raise Conflict("changed my mind")


@router.get("/gadgets/by-name/{name}")
async def get_gadget(name: str, session: SessionDep) -> Envelope[GadgetOut]:
    gadget = (await session.execute(select(Gadget).where(Gadget.name == name))).scalar_one()
    return ok(GadgetOut.model_validate(gadget))


@router.get("/items")
async def list_items(
    query: Annotated[GadgetQuery, Query()],
) -> Page[int] | CursorPage[int]:
    items = list(range(1, 24))
    if query.uses_cursor:
        start = int(query.cursor) if query.cursor else 0
        chunk = items[start : start + query.limit]
        more = start + query.limit < len(items)
        next_cursor = str(start + query.limit) if more else None
        return cursor_page(chunk, limit=query.limit, next_cursor=next_cursor)
    chunk = items[query.offset : query.offset + query.limit]
    return page(chunk, total=len(items), page=query.page, limit=query.limit)


@router.get("/boom")
async def boom() -> Envelope[int]:
    raise RuntimeError("secret internals: SELECT * FROM users")


@router.get("/cursor")
async def make_cursor() -> Envelope[str]:
    return ok(encode_cursor(["a", 1]))


@router.get("/big")
async def big() -> Envelope[str]:
    return ok("x" * 5000)


@router.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 4096

    return StreamingResponse(chunks(), media_type="text/plain")


@router.get("/small")
async def small() -> Envelope[str]:
    return ok("x" * 500)
