"""Organization slugs: `[a-z0-9-]{3,50}`, derived from the name when not given."""

from __future__ import annotations

import re
import secrets
import unicodedata

SLUG_PATTERN = r"^[a-z0-9-]{3,50}$"
_SLUG = re.compile(SLUG_PATTERN)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
MAX_LENGTH = 50


def is_valid_slug(slug: str) -> bool:
    return _SLUG.match(slug) is not None


def slugify(name: str) -> str:
    """A valid slug from any name ("Acme GmbH & Co." → "acme-gmbh-co")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:MAX_LENGTH].strip("-")
    if len(slug) < 3:
        slug = (slug + "-org" if slug else "org").strip("-")
    return slug


def with_suffix(slug: str) -> str:
    """`slug` made distinct with a short random suffix, still at most 50 characters."""
    suffix = secrets.token_hex(3)
    return f"{slug[: MAX_LENGTH - len(suffix) - 1].rstrip('-')}-{suffix}"
