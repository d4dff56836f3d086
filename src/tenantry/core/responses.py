"""Envelopes, schema base classes and pagination (offset and keyset) shared by every module.

Routes return `Envelope[T]`, `Page[T]` or `CursorPage[T]`; FastAPI validates and
serializes them once through pydantic-core. The query side is `ListQuery`, which each
resource narrows with its own sort allow-list (`ListQuery.for_fields`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from starlette.responses import JSONResponse as _StarletteJSONResponse

T = TypeVar("T")

MAX_INT8 = 2**63 - 1


def utc_timestamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JSONResponse(_StarletteJSONResponse):
    """JSON via orjson: UTC datetimes with `Z`, UUIDs, no NaN surprises."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _reject_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, list | tuple | set):
        for item in value:
            _reject_nul(item)
    return value


class Schema(BaseModel):
    """Response models: camelCase on the wire, built from ORM objects."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        ser_json_timedelta="float",
    )


NO_NUL_PATTERN = "^[^\\x00]*$"


def _forbid_nul_in_schema(schema: Any) -> None:
    """Give every free-text string of a (property) schema the no-NUL pattern."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not (
        {"pattern", "format", "enum", "const"} & set(schema)
    ):
        schema["pattern"] = NO_NUL_PATTERN
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            _forbid_nul_in_schema(option)
    _forbid_nul_in_schema(schema.get("items"))


class RequestSchema(BaseModel):
    """Request bodies: camelCase, unknown fields rejected, NUL bytes rejected.

    Mass assignment is impossible by construction: a request schema simply has no
    `id`, `organizationId`, `createdBy`... field, so sending one is a 400.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=False,
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_bytes(cls, value: Any) -> Any:
        return _reject_nul(value)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The document says what the validator above refuses: strings without NUL."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        for prop in target.get("properties", {}).values():
            _forbid_nul_in_schema(prop)
        return schema


def _schema_stem(param: Any) -> str:
    """`ProjectOut` → `Project`, `list[RoleOut]` → `RoleList`: the stem of a named schema."""
    args = getattr(param, "__args__", None)
    if getattr(param, "__origin__", None) is list and args:
        return f"{_schema_stem(args[0])}List"
    name = getattr(param, "__name__", str(param))
    return name.removesuffix("Out") or name


class Envelope(Schema, Generic[T]):
    success: Literal[True] = True
    data: T
    timestamp: str = Field(default_factory=utc_timestamp)

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        # The name clients see (`ProjectEnvelope`), not pydantic's `Envelope_ProjectOut_`.
        return f"{_schema_stem(params[0])}Envelope"


def _false(value: bool) -> bool:
    return not value


class PageMeta(Schema):
    total: int
    page: int
    limit: int
    total_pages: int
    has_next_page: bool
    has_prev_page: bool
    # Present (and true) only when `total` is a cap, not a count (a search's total).
    total_is_estimate: bool = Field(default=False, exclude_if=_false)


class CursorMeta(Schema):
    limit: int
    next_cursor: str | None
    has_next_page: bool


class Page(Schema, Generic[T]):
    success: Literal[True] = True
    data: list[T]
    meta: PageMeta
    timestamp: str = Field(default_factory=utc_timestamp)

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        return f"{_schema_stem(params[0])}Page"


class CursorPage(Schema, Generic[T]):
    success: Literal[True] = True
    data: list[T]
    meta: CursorMeta
    timestamp: str = Field(default_factory=utc_timestamp)

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        return f"{_schema_stem(params[0])}CursorPage"


class JobAccepted(Schema):
    job_id: str
    status: Literal["queued"] = "queued"


def ok(data: T) -> Envelope[T]:
    return Envelope[T](data=data)


def page(
    items: Sequence[T], *, total: int, page: int, limit: int, total_is_estimate: bool = False
) -> Page[T]:
    total_pages = math.ceil(total / limit) if total else 0
    meta = PageMeta(
        total=total,
        page=page,
        limit=limit,
        total_pages=total_pages,
        has_next_page=page < total_pages,
        has_prev_page=page > 1,
        total_is_estimate=total_is_estimate,
    )
    return Page[T](data=list(items), meta=meta)


def cursor_page(items: Sequence[T], *, limit: int, next_cursor: str | None) -> CursorPage[T]:
    meta = CursorMeta(limit=limit, next_cursor=next_cursor, has_next_page=next_cursor is not None)
    return CursorPage[T](data=list(items), meta=meta)


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


class ListQuery(BaseModel):
    """`page`, `limit`, `sortBy`, `sortOrder`, `search`, `cursor` — validated, never echoed.

    A resource subclasses it, names its sortable fields in `sort_fields` (camelCase, as
    clients send them) and adds its own filters; use it as `Annotated[Q, Query()]`.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    sort_fields: ClassVar[tuple[str, ...]] = ("createdAt",)
    # The deepest offset page, in rows, and how far a search's total is counted
    # (`MAX_OFFSET_ROWS`, `SEARCH_COUNT_CAP`: set by `configure_lists`).
    max_offset_rows: ClassVar[int] = 10_000
    search_count_cap: ClassVar[int] = 1_000

    page: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Offset pages reach `page * limit` <= MAX_OFFSET_ROWS (10,000 by default) "
        "rows; deeper is a 400: use `cursor`",
    )
    limit: int = Field(default=10, ge=1, le=100)
    sort_by: str = Field(default="createdAt", json_schema_extra={"enum": ["createdAt"]})
    sort_order: SortOrder = SortOrder.DESC
    search: str | None = Field(
        default=None, max_length=200, json_schema_extra={"pattern": NO_NUL_PATTERN}
    )
    cursor: str | None = Field(default=None, json_schema_extra={"pattern": NO_NUL_PATTERN})

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """The document names the allowed `sortBy` values as an enum, as the server checks."""
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.__pydantic_fields__["sort_by"]
        allowed: list[JsonValue] = list(cls.sort_fields)
        if field.json_schema_extra != {"enum": allowed}:
            narrowed = copy.copy(field)
            narrowed.json_schema_extra = {"enum": allowed}
            cls.__pydantic_fields__["sort_by"] = narrowed
            cls.model_rebuild(force=True)

    @field_validator("search", "cursor", "sort_by", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _reject_nul(value)

    @field_validator("sort_by", mode="after")
    @classmethod
    def _allowed_sort(cls, value: str) -> str:
        if value not in cls.sort_fields:
            raise ValueError(f"must be one of: {', '.join(cls.sort_fields)}")
        return value

    @model_validator(mode="after")
    def _offset_within_reach(self) -> ListQuery:
        """An offset page deeper than `max_offset_rows` is a 400 pointing to `cursor`.

        PostgreSQL reads and drops every row an `OFFSET` skips: page 50,000 costs 50,000
        times page 1, for every client that asks. A keyset page costs the same at any
        depth. Checked here, where every list's query is parsed, so no list can forget.
        """
        rows = self.page * self.limit
        if self.cursor is None and rows > self.max_offset_rows:
            from tenantry.core.errors import ValidationFailed

            raise ValidationFailed(
                f"Offset pages stop at {self.max_offset_rows} rows (page * limit); "
                "use `cursor` to read further",
                details=[
                    {
                        "field": "page",
                        "message": f"page * limit must be at most "
                        f"{self.max_offset_rows}; use cursor pagination",
                    }
                ],
            )
        return self

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit

    @property
    def uses_cursor(self) -> bool:
        return self.cursor is not None


def configure_lists(*, max_offset_rows: int, search_count_cap: int) -> None:
    """Every list's deepest offset page and search count cap, set once by `create_app`."""
    ListQuery.max_offset_rows = max_offset_rows
    ListQuery.search_count_cap = search_count_cap


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque keyset cursor: the sort key values of the last row returned."""
    raw = orjson.dumps([v.isoformat() if isinstance(v, dt.datetime) else str(v) for v in values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The sort key values in a cursor; a tampered cursor is a 400, never a 500."""
    from tenantry.core.errors import ValidationFailed

    invalid = ValidationFailed(details=[{"field": "cursor", "message": "Invalid cursor"}])
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        raise invalid from None
    if not isinstance(values, list) or len(values) != size:
        raise invalid
    if not all(isinstance(v, str) for v in values):
        raise invalid
    return values
