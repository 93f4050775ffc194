# The header policy's content types, file names and dispositions: the safety rewrite, what may show inline.
# Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

import pytest

from pipe_relay.core.headers import (
    attachment_for,
    body_info,
    inline_safe,
    is_multipart_form,
    receiver_disposition,
    receiver_headers,
    safe_content_type,
    sanitize_filename,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "application/octet-stream"),
        ("*/*", "application/octet-stream"),
        ("text/*", "application/octet-stream"),
        ("unknown/unknown", "application/octet-stream"),
        ("Unknown/Unknown; charset=utf-8", "application/octet-stream"),
        ("", "application/octet-stream"),
        ("   ", "application/octet-stream"),
        ("garbage", "application/octet-stream"),
        ("text/", "application/octet-stream"),
        ("/plain", "application/octet-stream"),
        ("text/plain/extra", "application/octet-stream"),
        ("text plain", "application/octet-stream"),
        ("text/html", "text/plain"),
        ("text/html; charset=utf-8", "text/plain; charset=utf-8"),
        ("TEXT/HTML", "text/plain"),
        ("application/xhtml+xml", "text/plain"),
        ("image/svg+xml", "text/plain"),
        ("Image/SVG+XML", "text/plain"),
        ("application/rss+xml", "text/plain"),
        ("application/atom+xml", "text/plain"),
        ("text/xml", "text/plain"),
        ("application/xml", "text/plain"),
        ("text/javascript", "text/plain"),
        ("application/javascript", "text/plain"),
        ("application/x-javascript", "text/plain"),
        ("application/ecmascript", "text/plain"),
        ("text/ecmascript", "text/plain"),
        ("text/plain", "text/plain"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/json", "application/json"),
        ("image/png", "image/png"),
        ("IMAGE/PNG", "image/png"),
        ("Video/MP4", "video/mp4"),
        ("application/pdf", "application/pdf"),
        ("  image/png  ", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("text/plain;charset=utf-8", "text/plain; charset=utf-8"),
        ("text/plain; CHARSET=ISO-8859-1", "text/plain; charset=ISO-8859-1"),
        ('text/plain; charset="utf-8"', "text/plain; charset=utf-8"),
        ("text/plain; charset = utf-8", "text/plain; charset=utf-8"),
        ("text/plain; format=flowed; charset=utf-8", "text/plain; charset=utf-8"),
        ("text/plain; charset=utf-8; charset=latin1", "text/plain; charset=utf-8"),
        ("text/plain; charset=utf-8; format=flowed", "text/plain; charset=utf-8"),
        ("image/png; name=a.png", "image/png"),
        ("application/octet-stream; x=1; y=2", "application/octet-stream"),
        ('text/plain; charset="utf 8"', "text/plain"),
        ('text/plain; charset="<script>"', "text/plain"),
        ("text/plain; charset=" + "a" * 41, "text/plain"),
        ("text/plain; charset=" + "a" * 40, "text/plain; charset=" + "a" * 40),
        ("text/plain; charset=utf-8\r\nX-Evil: 1", "text/plain"),
        ('text/plain; charset="utf-8\n"', "text/plain"),
        ("text/plain; charset=utf-8\n", "text/plain; charset=utf-8"),
        ("text/html\r\nX-Evil: 1", "application/octet-stream"),
    ],
)
def test_safe_content_type(value: str | None, expected: str) -> None:
    assert safe_content_type(value) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("IMAGE/GIF", True),
        ("audio/mpeg", True),
        ("video/mp4", True),
        ("video/webm", True),
        ("text/plain", True),
        ("text/plain; charset=utf-8", True),
        ("application/pdf", True),
        ("image/svg+xml", False),
        ("application/octet-stream", False),
        ("application/json", False),
        ("text/csv", False),
        ("text/html", False),
        ("application/zip", False),
    ],
)
def test_inline_safe(content_type: str, expected: bool) -> None:
    assert inline_safe(content_type) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("a\x00b.txt", "ab.txt"),
        ("a\r\nb.txt", "ab.txt"),
        ("a\tb\x1b\x7f.txt", "ab.txt"),
        ("dir/file.txt", "dirfile.txt"),
        ("dir\\file.txt", "dirfile.txt"),
        ("../../etc/passwd", "etcpasswd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".hidden", "hidden"),
        ("...", ""),
        ("a.b.c", "a.b.c"),
        ("résumé.pdf", "résumé.pdf"),
        ("x" * 300, "x" * 255),
        ("\x00" * 10 + "y" * 260, "y" * 255),
        ("." * 5 + "z" * 255, "z" * 255),
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        ("my file.txt", "attachment; filename=\"my file.txt\"; filename*=UTF-8''my%20file.txt"),
        ('a"b.txt', 'attachment; filename="a\\"b.txt"; filename*=UTF-8\'\'a%22b.txt'),
        ("a;b.txt", "attachment; filename=\"a;b.txt\"; filename*=UTF-8''a%3Bb.txt"),
        ("résumé.pdf", "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
        ("日本.txt", "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
        ("a%b", "attachment; filename=\"a%b\"; filename*=UTF-8''a%25b"),
        ("a'b", "attachment; filename=\"a'b\"; filename*=UTF-8''a%27b"),
    ],
)
def test_attachment_for(name: str, expected: str) -> None:
    assert attachment_for(name) == expected


@pytest.mark.parametrize(
    ("sender", "content_type", "expected"),
    [
        (None, "application/octet-stream", None),
        ("", "application/octet-stream", None),
        ("inline", "application/octet-stream", "attachment"),
        ("inline", "text/plain; charset=utf-8", "inline"),
        ("inline", "text/plain", "inline"),
        ("inline", "image/png", "inline"),
        ("inline", "audio/ogg", "inline"),
        ("inline", "video/mp4", "inline"),
        ("inline", "application/pdf", "inline"),
        ("inline", "image/svg+xml", "attachment"),
        ("inline", "application/json", "attachment"),
        ("INLINE", "application/zip", "attachment"),
        ('inline; filename="a.bin"', "application/octet-stream", 'attachment; filename="a.bin"'),
        ('inline; filename="a.png"', "image/png", 'inline; filename="a.png"'),
        ('attachment; filename="a.png"', "image/png", 'attachment; filename="a.png"'),
        ('attachment; filename="a\r\nSet-Cookie: x"', "text/plain", 'attachment; filename="aSet-Cookie: x"'),
        ("inline\r\n", "application/octet-stream", "attachment"),
        ("  inline  ", "application/octet-stream", "attachment"),
    ],
)
def test_receiver_disposition_passthrough(
    sender: str | None, content_type: str, expected: str | None
) -> None:
    assert receiver_disposition(sender, content_type, download=None, filename=None) == expected


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        (None, "attachment"),
        ("inline", "attachment"),
        ('inline; filename="a.png"', 'attachment; filename="a.png"'),
        ('attachment; filename="a.png"', 'attachment; filename="a.png"'),
    ],
)
def test_receiver_disposition_download_true_forces_attachment(sender: str | None, expected: str) -> None:
    assert receiver_disposition(sender, "image/png", download=True, filename=None) == expected


@pytest.mark.parametrize("sender", [None, "inline", 'attachment; filename="a.bin"'])
def test_receiver_disposition_download_false_removes_it(sender: str | None) -> None:
    assert receiver_disposition(sender, "application/octet-stream", download=False, filename=None) is None


@pytest.mark.parametrize("download", [None, True, False])
def test_receiver_disposition_filename_implies_attachment(download: bool | None) -> None:
    result = receiver_disposition("inline", "image/png", download=download, filename="custom.txt")
    assert result == "attachment; filename=\"custom.txt\"; filename*=UTF-8''custom.txt"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../x\r\n.txt", "attachment; filename=\"x.txt\"; filename*=UTF-8''x.txt"),
        ("a/b\\c\x00d", "attachment; filename=\"abcd\"; filename*=UTF-8''abcd"),
        ("...", "attachment"),
        ("", "attachment"),
        ("x" * 300, f"attachment; filename=\"{'x' * 255}\"; filename*=UTF-8''{'x' * 255}"),
    ],
)
def test_receiver_disposition_filename_is_sanitized(filename: str, expected: str) -> None:
    assert receiver_disposition(None, "text/plain", download=None, filename=filename) == expected


@pytest.mark.parametrize(
    ("disposition", "content_type", "expected"),
    [
        ('form-data; name="input_data"', "application/octet-stream", 'form-data; name="input_data"'),
        ('form-data; name="f"; filename="a\r\nb.png"', "image/png", 'form-data; name="f"; filename="ab.png"'),
        ('inline; name="f"', "text/plain", 'inline; name="f"'),
        ('inline; name="f"', "application/octet-stream", 'attachment; name="f"'),
    ],
)
def test_form_part_disposition_follows_the_sender_policy(
    disposition: str, content_type: str, expected: str
) -> None:
    assert receiver_disposition(disposition, content_type, download=None, filename=None) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("multipart/form-data; boundary=x", True),
        ("Multipart/Form-Data;boundary=x", True),
        ("multipart/form-data", True),
        ("multipart/mixed; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        (None, False),
        ("", False),
    ],
)
def test_is_multipart_form(value: str | None, expected: bool) -> None:
    assert is_multipart_form(value) is expected


def test_html_shown_inline_becomes_plain_text_inline() -> None:
    info = body_info([("content-type", "text/html"), ("content-disposition", "inline")])
    headers = dict(receiver_headers(info, origin=None, download=None, filename=None, framing_headers=[]))
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Disposition"] == "inline"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Robots-Tag"] == "none"


def test_svg_sent_inline_is_plain_text() -> None:
    info = body_info([("content-type", "image/svg+xml"), ("content-disposition", "inline")])
    assert info.content_type == "text/plain"
    headers = dict(receiver_headers(info, origin=None, download=None, filename=None, framing_headers=[]))
    assert headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize(
    ("sent", "content_type", "expected"),
    [
        # the type is read strictly: these were forwarded unchanged, and a browser showed them inline
        ('"inline"', "text/html", "attachment"),
        ("inline,", "application/octet-stream", "attachment"),
        ("inline x", "application/octet-stream", "attachment"),
        ("filename=x.html", "text/plain", "attachment; filename=\"x.html\"; filename*=UTF-8''x.html"),
        (
            '"inline"; filename="../p.html"',
            "text/plain",
            "attachment; filename=\"p.html\"; filename*=UTF-8''p.html",
        ),
        ('attachment; filename="cut', "text/plain", "attachment"),
        ("attachment;", "text/plain", "attachment"),
        ('foo; filename="a b.txt"', "text/plain", 'attachment; filename="a b.txt"'),
        ('Attachment; filename="a.txt"', "text/plain", 'Attachment; filename="a.txt"'),
        ('form-data; name="f"; filename="a.png"', "image/png", 'form-data; name="f"; filename="a.png"'),
        ("INLINE", "image/png", "INLINE"),
        ("inline", "application/pdf", "inline"),
        ("inline; size=3", "image/svg+xml", "attachment; size=3"),
    ],
)
def test_the_disposition_type_is_parsed_strictly(sent: str, content_type: str, expected: str) -> None:
    assert receiver_disposition(sent, content_type, download=None, filename=None) == expected
