"""schemathesis hooks for `make fuzz`: every request authenticated as the organization owner.

The fuzzer itself may end the owner's session (it revokes sessions it finds through
`GET /auth/sessions`, rotates refresh tokens and presents them twice, which revokes the
session family by design): a token that a fixed header would carry dies with it, and every
later request would only test the 401. So the owner signs in again every few seconds.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

REFRESH_SECONDS = 2


@schemathesis.auth(refresh_interval=REFRESH_SECONDS)
class OwnerAuth:
    def get(self, case: Any, context: Any) -> str:
        answer = httpx.post(
            f"{os.environ['FUZZ_BASE_URL']}/api/v1/auth/login",
            json={"email": os.environ["FUZZ_EMAIL"], "password": os.environ["FUZZ_PASSWORD"]},
            timeout=30,
        )
        answer.raise_for_status()
        token: str = answer.json()["data"]["accessToken"]
        return token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# Where schemathesis is wrong: a schema-valid request the contract itself refuses, because
# the rule depends on state or on another parameter, which JSON Schema cannot state. Each
# entry is one documented rule, matched on the server's own answer (status, code and the
# field it names), so any other rejection of valid data still fails the run.
#   (status, code, field, message fragment): why the contract refuses it
ACCEPTED_REFUSALS: dict[tuple[int, str, str | None, str], str] = {
    (400, "invalid_token", None, ""): "single-use tokens the fuzzer cannot know (API.md)",
    (400, "validation_error", "page", "use cursor pagination"): "page x limit > MAX_OFFSET_ROWS",
    (400, "validation_error", "cursor", "Invalid cursor"): "cursors are opaque, server-issued",
    (400, "validation_error", "cursor", "sorts by createdAt"): "keyset pages of files/users",
    (400, "validation_error", "body", "at most 366 days"): "usage: `to - from` over a year",
    (400, "validation_error", "body", "must not be before"): "usage: `to` before `from`",
    (400, "validation_error", "expiresAt", "in the future"): "an API key expiring in the past",
    (400, "validation_error", "assigneeId", "Not a member"): "assignees must be members",
    (400, "validation_error", "password", "account that has a password"): (
        "erasure: the password is optional in the schema (accounts from an identity provider "
        "have none) and required for an account that has one"
    ),
    (412, "precondition_failed", "If-Match", ""): "a stale If-Match (API.md: 412)",
    (402, "plan_limit_reached", None, ""): "the fuzzer fills the trial plan's limits",
    (415, "unsupported_media_type", "file", "detected type"): "upload types are sniffed",
}


def _accepted_refusal(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    details = body.get("details") if isinstance(body.get("details"), list) else []
    for (status, code, field, fragment), reason in ACCEPTED_REFUSALS.items():
        if response.status_code != status or body.get("code") != code:
            continue
        if field is None:
            return reason
        for detail in details:
            if (
                isinstance(detail, dict)
                and detail.get("field") == field
                and fragment in str(detail.get("message", ""))
            ):
                return reason
    return None


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except a schema-valid request refused by a rule listed above."""
    if type(failure).__name__ != "RejectedPositiveData":
        return True
    return _accepted_refusal(response) is None
