"""Log capture over the whole auth test package: no password, token or secret is ever logged.

Every record emitted while the tests of this package run (at DEBUG, whatever the app's
level) is kept; at the end the text is searched for every secret the tests handled
(`tests.factories.ISSUED_SECRETS`), for anything shaped like a JWT and for password hashes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from tests.factories import ISSUED_SECRETS

JWT_SHAPE = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
HASH_SHAPE = re.compile(r"\$argon2id?\$|\$2[aby]\$\d\d\$")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("tenantry") and getattr(record, "_captured", False):
            return  # already seen through the `tenantry` logger
        record._captured = True
        self.lines.append(self.format(record))


def find_leaks(text: str) -> list[str]:
    leaks = [f"secret {value[:4]}…" for value in ISSUED_SECRETS if value in text]
    leaks += [f"JWT {m[:12]}…" for m in JWT_SHAPE.findall(text)]
    leaks += [f"hash {m}" for m in HASH_SHAPE.findall(text)]
    return leaks


@pytest.fixture(scope="package", autouse=True)
def no_secrets_in_logs() -> Iterator[_Capture]:
    # Our own records through the `tenantry` logger, which `configure_logging` leaves alone
    # (an app built by a test re-configures the root logger), everything else via root.
    ours = logging.getLogger("tenantry")
    root = logging.getLogger()
    capture = _Capture()
    previous = ours.level, root.level
    ours.addHandler(capture)
    ours.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        ours.removeHandler(capture)
        root.removeHandler(capture)
        ours.setLevel(previous[0])
        root.setLevel(previous[1])
    text = "\n".join(capture.lines)
    leaks = find_leaks(text)
    assert not leaks, f"secrets in the logs of the auth tests: {leaks}"


@pytest.fixture(autouse=True)
def _capture_third_party_logs(no_secrets_in_logs: _Capture) -> None:
    """Root (third-party libraries) at DEBUG into the capture, re-attached for each test."""
    root = logging.getLogger()
    if no_secrets_in_logs not in root.handlers:
        root.addHandler(no_secrets_in_logs)
    root.setLevel(logging.DEBUG)
