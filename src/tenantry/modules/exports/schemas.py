"""Export request body: `{}` or `{"format": "json"}` (JSON is the only format so far)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict

from tenantry.core.responses import RequestSchema


class ExportCreate(RequestSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"format": "json"}]})

    format: Literal["json"] = "json"
