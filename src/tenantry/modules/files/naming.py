"""Client filenames as display names only, and their safe `Content-Disposition` header.

A client's filename never reaches a storage path (keys come from `core.storage.make_key`).
It is still shown back to people and sent in a header, so it is reduced to its last path
component, stripped of control characters (CR/LF could split a header), NFC-normalised
and shortened; everything else — spaces, quotes, any script — is kept as typed.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_FILENAME_LENGTH = 255
DEFAULT_FILENAME = "file"
# C0/C1 controls, DEL, and the Unicode line/paragraph separators and bidi overrides
# (which make `evil‮txt.exe` look like `evilexe.txt`).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ASCII_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\%;]')


def display_filename(raw: str) -> str:
    """The name to store and show for a client-supplied `raw` filename."""
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[/\\]", name)[-1]  # C:\fakepath\x.png, ../../etc/passwd
    name = _UNSAFE.sub("", name).strip().strip(".").strip()
    if not name:
        return DEFAULT_FILENAME
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16 and stem:
            name = stem[: MAX_FILENAME_LENGTH - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_FILENAME_LENGTH]
    return name


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the exact name per RFC 6266 / RFC 5987."""
    decomposed = unicodedata.normalize("NFKD", filename)
    unaccented = "".join(char for char in decomposed if not unicodedata.combining(char))
    fallback = _ASCII_UNSAFE.sub("_", unaccented).strip() or DEFAULT_FILENAME
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
