"""Sample file contents: real magic numbers, so the sniffer sees what a client would send."""

from __future__ import annotations

import hashlib
import os

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(2000)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(500)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"1 0 obj << >> endobj\n" * 20
ZIP = b"PK\x03\x04\x14\x00\x00\x00" + os.urandom(300)
GIF = b"GIF89a" + os.urandom(100)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + os.urandom(100)
TEXT = "Grüße, world ✓\nsecond line\n".encode()
CSV = b"name,amount\nalice,10\nbob,20\n"
JSON = b'{"hello": ["world", 1, true]}\n'
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + os.urandom(400)
ELF = b"\x7fELF\x02\x01\x01" + os.urandom(400)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
