"""Dates and datetimes a client sends (bodies and query parameters): ISO 8601 text only.

pydantic's lax mode reads a number, or a string of digits, as seconds since 1970: `0`,
`"0"` or `"86400"` would quietly become a day in 1970 instead of a 400. Every request
field that holds a date uses `IsoDate`, `IsoDateTime` or `AwareIsoDateTime`: the value
must be text in ISO 8601 form (`2024-05-01`, `2024-05-01T12:30:00Z`, ...), then pydantic
checks the calendar (`2024-13-45` is refused too). Anything else is a 400
`validation_error` naming the field. Responses keep plain `dt.date` / `dt.datetime`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A date alone is midnight; seconds, fractions and the offset are optional, as in RFC 3339
# (which also allows a space for the `T`).
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def _iso_date(value: Any) -> Any:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value):
        return value
    raise ValueError("must be an ISO 8601 date (YYYY-MM-DD)")


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATETIME.fullmatch(value):
        return value
    raise ValueError("must be an ISO 8601 date-time (e.g. 2024-05-01T12:30:00Z)")


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_datetime)]
AwareIsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]

__all__ = ["AwareIsoDateTime", "IsoDate", "IsoDateTime"]
