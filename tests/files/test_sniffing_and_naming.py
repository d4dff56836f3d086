"""Rules hard to reach through HTTP: the sniffer's edges, display names, the header encoding."""

from __future__ import annotations

import pytest

from tenantry.config import DEFAULT_UPLOAD_TYPES, SettingsError, load_settings
from tenantry.modules.files.naming import (
    MAX_FILENAME_LENGTH,
    content_disposition,
    display_filename,
)
from tenantry.modules.files.sniffing import SNIFF_BYTES, TextCheck, sniff


def test_a_multibyte_character_cut_by_the_sniff_window_is_still_text() -> None:
    head = ("a" * (SNIFF_BYTES - 1) + "é").encode()[:SNIFF_BYTES]
    assert len(head) == SNIFF_BYTES
    assert head.endswith(b"\xc3")
    assert sniff(head) == "text/plain"
    assert sniff(b"a\xc3") == "application/octet-stream"  # a whole file may not end so


def test_text_with_a_bom_is_text_and_utf16_is_not() -> None:
    assert sniff(b"\xef\xbb\xbfhello") == "text/plain"
    assert sniff("hello".encode("utf-16")) == "application/octet-stream"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"<p>hi</p>", "text/html"),
        (b"\n\t <!-- comment -->", "text/html"),
        (b"<a href=x>", "text/html"),
        (b"<abbr> is not a tag we know as html", "text/plain"),
        (b"3 < 4 and <b>", "text/plain"),
        (b"<?xml version='1.0'?><svg></svg>", "image/svg+xml"),
        (b"plain text then <svg onload=alert(1)>", "image/svg+xml"),
    ],
)
def test_markup_is_not_text(head: bytes, expected: str) -> None:
    assert sniff(head, declared="text/plain") == expected


def test_text_check_refuses_binary_and_a_dangling_character() -> None:
    check = TextCheck()
    assert check.feed("héllo".encode()[:2])
    assert check.feed("héllo".encode()[2:])
    assert not check.feed(b"\x00")
    dangling = TextCheck()
    assert dangling.feed(b"ok \xe2\x9c")
    assert not dangling.feed(b"", final=True)


def test_long_names_keep_their_extension() -> None:
    name = display_filename("x" * 400 + ".pdf")
    assert len(name) == MAX_FILENAME_LENGTH
    assert name.endswith(".pdf")
    assert display_filename("   ") == "file"
    assert display_filename("Cafe\u0301.txt") == "Café.txt"  # NFC


def test_content_disposition_has_an_ascii_fallback_and_the_exact_name() -> None:
    header = content_disposition('Ünïcode "quoted" \\ 100%; x.txt')
    assert header == (
        'attachment; filename="Unicode _quoted_ _ 100__ x.txt"; '
        "filename*=UTF-8''%C3%9Cn%C3%AFcode%20%22quoted%22%20%5C%20100%25%3B%20x.txt"
    )


def test_the_allow_list_setting_accepts_known_types_only() -> None:
    settings = load_settings(_env_file=None, upload_allowed_types="image/png, TEXT/PLAIN")
    assert settings.upload_allowed_types == ["image/png", "text/plain"]
    assert load_settings(_env_file=None).upload_allowed_types == list(DEFAULT_UPLOAD_TYPES)
    with pytest.raises(SettingsError, match="UPLOAD_ALLOWED_TYPES"):
        load_settings(_env_file=None, upload_allowed_types="image/png,application/x-evil")
