"""Export request body: `{}` or `{"format": "json"}` (JSON is the only format so far)."""

from __future__ import annotations

from typing import Literal

from tenantry.core.responses import RequestSchema


class ExportCreate(RequestSchema):
    format: Literal["json"] = "json"
