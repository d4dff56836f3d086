"""The `file` part of a `multipart/form-data` request, parsed straight off the request stream.

Starlette's `request.form()` spools every file part to a temporary file (in memory up to
1 MiB, then on disk) and hands it over only when the whole body has arrived: the upload
would cross the disk twice and its first bytes could not be checked before the rest was
received. Here python-multipart's push parser runs on the body as it arrives, and the
file part's bytes are yielded as they come (docs/decisions.md). Memory is bounded by one
network chunk.

The form must hold exactly one part, `file`, with a filename; anything else is a 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from tenantry.core.errors import UnsupportedMediaType, ValidationFailed

FIELD = "file"
MAX_PART_HEADER_BYTES = 16 * 1024


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(details=[{"field": FIELD, "message": message}])


@dataclass
class _PartState:
    headers: dict[str, str] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    header_bytes: int = 0


class MultipartUpload:
    """`await open()` reads up to the file part's headers; then `chunks()` yields its bytes."""

    def __init__(self, request: Request) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        if content_type != b"multipart/form-data":
            raise UnsupportedMediaType("Upload the file as multipart/form-data (field `file`)")
        boundary = options.get(b"boundary")
        if not boundary:
            raise _invalid("The multipart content type has no boundary")
        self._stream = request.stream().__aiter__()
        self._part = _PartState()
        self._in_file = False
        self._file_seen = False
        self._file_done = False
        self._ended = False
        self._pending: list[bytes] = []
        self.filename = ""
        self.declared_type: str | None = None
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    async def open(self) -> MultipartUpload:
        while not self._in_file:
            if not await self._pump():
                raise _invalid("The form has no `file` part")
        return self

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; the rest of the body is then read and checked."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if self._file_done:
                break
            if not await self._pump():
                raise _invalid("The request body ended inside the file")
        while await self._pump():
            pass
        if not self._ended:
            raise _invalid("The multipart body is incomplete")

    async def _pump(self) -> bool:
        """Feed the next chunk of the body to the parser; False once the body has ended."""
        if self._ended:
            return False
        try:
            chunk = await anext(self._stream)
        except StopAsyncIteration:
            return False
        if chunk:
            try:
                self._parser.write(chunk)
            except ValidationFailed:
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise _invalid("Malformed multipart body") from exc
        return True

    # --- parser callbacks (synchronous, called from `write`) ---------------------------

    def _on_part_begin(self) -> None:
        self._part = _PartState()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._part.header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._part.header_value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._part.header_bytes += size
        if self._part.header_bytes > MAX_PART_HEADER_BYTES:
            raise _invalid("The part headers are too large")

    def _on_header_end(self) -> None:
        name = bytes(self._part.header_field).decode("latin-1").strip().lower()
        self._part.headers[name] = bytes(self._part.header_value).decode("latin-1")
        self._part.header_field.clear()
        self._part.header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self._part.headers.get("content-disposition", "")
        )
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or name != FIELD:
            raise _invalid(f"Unknown form field {name!r}: send only the `file` part")
        if self._file_seen:
            raise _invalid("Send one file per request")
        if b"filename" not in options:
            raise _invalid("The `file` part must be a file (with a filename)")
        self.filename = _browser_filename(options[b"filename"].decode("utf-8", "replace"))
        declared = self._part.headers.get("content-type")
        self.declared_type = declared.strip() if declared else None
        self._file_seen = self._in_file = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and end > start:
            self._pending.append(bytes(data[start:end]))

    def _on_part_end(self) -> None:
        if self._in_file:
            self._file_done = True

    def _on_end(self) -> None:
        self._ended = True


def _browser_filename(name: str) -> str:
    """Undo the escaping browsers (and httpx) apply to `"`, CR and LF in multipart filenames.

    WHATWG HTML's form encoding sends them as `%22`, `%0D`, `%0A` and leaves `%` itself
    alone, so this is ambiguous for names that contain those sequences literally; the
    common case (a quote in a name) wins. Line breaks are dropped, never restored.
    """
    return name.replace("%22", '"').replace("%0D", "").replace("%0A", "")
