"""What a file really is, from its first bytes — never from what the client says it is.

`sniff(head, declared=..., filename=...)` looks at the first `SNIFF_BYTES` of an upload:
magic numbers for the binary formats (PNG, JPEG, GIF, WebP, PDF, ZIP, executables), then
text. Text is UTF-8 (optionally with a BOM) without NUL or other control characters;
markup (HTML, XML, SVG — what a browser might render and run) is recognised as such and
is not text. Only between the harmless text types (plain, CSV, JSON) does the client's
declared type or file extension choose, because any of them is served the same way.

`TextCheck` keeps checking the rest of a text upload while it streams, so a file that
starts as text and turns binary later is refused too.
"""

from __future__ import annotations

import codecs
import re

SNIFF_BYTES = 8 * 1024

OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"
TEXT_TYPES = frozenset({TEXT_PLAIN, "text/csv", "application/json"})
_TEXT_BY_EXTENSION = {".csv": "text/csv", ".json": "application/json", ".txt": TEXT_PLAIN}

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),  # an empty archive
    (b"PK\x07\x08", "application/zip"),  # a spanned archive
    (b"MZ", "application/x-executable"),  # Windows PE
    (b"\x7fELF", "application/x-executable"),
    (b"\xfe\xed\xfa\xce", "application/x-executable"),  # Mach-O
    (b"\xfe\xed\xfa\xcf", "application/x-executable"),
    (b"\xce\xfa\xed\xfe", "application/x-executable"),
    (b"\xcf\xfa\xed\xfe", "application/x-executable"),
    (b"\xca\xfe\xba\xbe", "application/x-executable"),  # Mach-O universal / Java class
    (b"#!", "application/x-executable"),  # a script with an interpreter line
)

# The WHATWG MIME-sniffing patterns for HTML (a tag name followed by space or `>`),
# plus XML and SVG, after optional whitespace.
_HTML_TAGS = "!doctype html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--"
_HTML = re.compile(rf"^\s*<(?:{_HTML_TAGS})(?:[\s>/]|$)", re.IGNORECASE)
_XML = re.compile(r"^\s*<\?xml", re.IGNORECASE)
_SVG = re.compile(r"<svg[\s>]", re.IGNORECASE)
# Control characters that never occur in text files (tab, LF, FF and CR do).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def sniff(head: bytes, *, declared: str | None = None, filename: str | None = None) -> str:
    """The content type of a file whose first bytes are `head`."""
    for magic, content_type in _MAGIC:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    text = _as_text(head, complete=len(head) < SNIFF_BYTES)
    if text is None:
        return OCTET_STREAM
    if _XML.match(text) or _SVG.search(text[:1024]):
        return "image/svg+xml" if _SVG.search(text) else "application/xml"
    if _HTML.match(text):
        return "text/html"
    return _text_subtype(text, declared, filename)


def _as_text(head: bytes, *, complete: bool) -> str | None:
    data = head.removeprefix(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # The head may end inside a multi-byte character: only a complete file must end cleanly.
        text = decoder.decode(data, final=complete)
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(text):
        return None
    return text


def _text_subtype(text: str, declared: str | None, filename: str | None) -> str:
    hinted = (declared or "").split(";", 1)[0].strip().lower()
    if hinted not in TEXT_TYPES and filename:
        dot = filename.rfind(".")
        hinted = _TEXT_BY_EXTENSION.get(filename[dot:].lower(), "") if dot >= 0 else ""
    if hinted == "application/json" and text.lstrip()[:1] not in ("{", "["):
        return TEXT_PLAIN
    return hinted if hinted in TEXT_TYPES else TEXT_PLAIN


class TextCheck:
    """Checks a text upload chunk by chunk: UTF-8 throughout, no control characters."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._first = True

    def feed(self, chunk: bytes, *, final: bool = False) -> bool:
        """False as soon as the bytes so far are not text."""
        if self._first:
            chunk = chunk.removeprefix(codecs.BOM_UTF8)
            self._first = False
        try:
            text = self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError:
            return False
        return _CONTROL.search(text) is None
