# Header-policy edges the mutation run showed unpinned: script-capable types, file names, form types.
# Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

import pytest

from pipe_relay.core.headers import (
    attachment_for,
    is_multipart_form,
    receiver_disposition,
    safe_content_type,
    sanitize_filename,
)


@pytest.mark.parametrize(
    "value",
    [
        "multipart/form-data",
        "multipart/x-mixed-replace; boundary=b",
        "Multipart/Related",
        "text/x-component",
        "application/x-shockwave-flash",
        "application/futuresplash",
        "text/vbscript",
        "text/x-vbscript",
        "application/x-vbscript",
        "TEXT/XSL",
    ],
)
def test_listed_and_multipart_types_are_plain_text(value: str) -> None:
    """Not found by a word in the subtype: named one by one (or, for multipart, by kind)."""
    assert safe_content_type(value) == "text/plain"


@pytest.mark.parametrize("value", ["text/x-componentx", "application/multipart", "text/vbscripts"])
def test_near_misses_of_the_listed_types_pass(value: str) -> None:
    assert safe_content_type(value) == value


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Xmas.txt", "Xmas.txt"), ("..XX.txt", "XX.txt"), (".X", "X")],
)
def test_only_leading_dots_are_stripped(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # RFC 8187 attr-char punctuation stays as it is in filename*
        ("a!#$&+-.^_`|~z", "attachment; filename=\"a!#$&+-.^_`|~z\"; filename*=UTF-8''a!#$&+-.^_`|~z"),
        # DEL is not ASCII text: `_` in the fallback, encoded in filename*
        ("a\x7fb", "attachment; filename=\"a_b\"; filename*=UTF-8''a%7Fb"),
        # a backslash is escaped in the quoted fallback
        ("a\\b", "attachment; filename=\"a\\\\b\"; filename*=UTF-8''a%5Cb"),
    ],
)
def test_attachment_for_punctuation(name: str, expected: str) -> None:
    assert attachment_for(name) == expected


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ('"inline"; filename="ab.txt"', "attachment; filename=\"ab.txt\"; filename*=UTF-8''ab.txt"),
        ('inline,; filename="a\\"b.txt"', 'attachment; filename="a\\"b.txt"; filename*=UTF-8\'\'a%22b.txt'),
        ('inline,; filename="XX\\yXX"', "attachment; filename=\"XXyXX\"; filename*=UTF-8''XXyXX"),
    ],
)
def test_a_quoted_filename_in_a_malformed_disposition_is_kept_whole(sent: str, expected: str) -> None:
    """Its first character too; escapes and backslashes are dropped (sanitize_filename drops every
    backslash, so the unescape itself is not visible: only that nothing else is lost)."""
    assert receiver_disposition(sent, "text/plain", download=None, filename=None) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("multipart/form-data; boundary=a; charset=utf-8", True),
        ("multipart/form-data;boundary=a;x=y;z=w", True),
        ("text/plain; x=multipart/form-data", False),
    ],
)
def test_is_multipart_form_reads_only_the_type(value: str, expected: bool) -> None:
    assert is_multipart_form(value) is expected
