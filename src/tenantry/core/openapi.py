"""OpenAPI: every route documents the error envelope it can answer with, never FastAPI's 422."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorEnvelope(BaseModel):
    """The error envelope of API.md."""

    model_config = ConfigDict(populate_by_name=True)

    success: Literal[False] = False
    status_code: int = Field(alias="statusCode", examples=[404])
    error: str = Field(examples=["Not Found"])
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["Project not found"])
    details: list[ErrorDetail] | dict[str, Any] = Field(default_factory=list)
    path: str
    request_id: str | None = Field(alias="requestId")
    timestamp: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Validation failed (`validation_error`), malformed JSON, unknown field"),
    413: _error("Request body too large (`payload_too_large`)"),
    415: _error("Content type is not application/json (`unsupported_media_type`)"),
    500: _error("Unexpected error (`internal_error`), never with a trace"),
    503: _error("Database or Redis unavailable (`service_unavailable`)"),
}

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("Missing, invalid or expired credentials"),
    429: _error("Rate limited (`rate_limited`), see `Retry-After`"),
}

TENANT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    402: _error("The plan or an expired trial forbids this"),
    403: _error("Member without the required permission (`forbidden`)"),
    404: _error("Not found, or not visible to the caller (`not_found`)"),
    409: _error("Conflict or stale version (`conflict`, `version_conflict`)"),
}


def finalize_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's generic 422 (we answer 400 with the error envelope instead)."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema
