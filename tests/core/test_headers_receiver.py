# The header policy's other fields: metadata, CORS and preflight, the body facts, a receiver's whole head.
# Invariant: pure and sync, no I/O; a receiver's head is compared as a whole list, in order.
from __future__ import annotations

import pytest

from pipe_relay.core.headers import (
    BodyInfo,
    body_info,
    cors_headers,
    first,
    metadata_headers,
    preflight_headers,
    receiver_headers,
    strip_controls,
)
from pipe_relay.core.replies import Reply


@pytest.mark.parametrize(
    ("part", "content_type", "disposition"),
    [
        (
            ("application/octet-stream", 'form-data; name="input_data"'),
            "application/octet-stream",
            'form-data; name="input_data"',
        ),
        ((None, 'form-data; name="text"'), "text/plain; charset=utf-8", 'form-data; name="text"'),
        (
            ("text/html", 'form-data; name="f"; filename="a.html"'),
            "text/plain",
            'form-data; name="f"; filename="a.html"',
        ),
        ((None, None), "text/plain; charset=utf-8", None),
    ],
)
def test_body_info_of_a_form_part(
    part: tuple[str | None, str | None], content_type: str, disposition: str | None
) -> None:
    """The part's own headers: its type through the safety rewrite, its disposition as written."""
    info = body_info(
        [("content-type", "multipart/form-data; boundary=x"), ("content-length", "9")], multipart_part=part
    )
    assert info == BodyInfo(content_type, disposition, None, ())


def test_metadata_headers_keep_order_per_name() -> None:
    headers = [
        ("x-piping", "one"),
        ("content-type", "text/plain"),
        ("x-hoody-pipe", "h1"),
        ("x-piping", "two"),
        ("x-hoody-pipe", "h2"),
    ]
    assert metadata_headers(headers) == [
        ("X-Piping", "one"),
        ("X-Piping", "two"),
        ("X-Hoody-Pipe", "h1"),
        ("X-Hoody-Pipe", "h2"),
    ]


def test_metadata_headers_strip_controls() -> None:
    headers = [("x-piping", "a\r\nSet-Cookie: b"), ("x-hoody-pipe", "c\x00d\te\x7f")]
    assert metadata_headers(headers) == [("X-Piping", "aSet-Cookie: b"), ("X-Hoody-Pipe", "cde")]


def test_metadata_headers_size_limit() -> None:
    at_limit = "a" * 8192
    over = "b" * 8193
    multibyte_over = "é" * 4097  # 8194 bytes in UTF-8
    headers = [
        ("x-piping", at_limit),
        ("x-piping", over),
        ("x-hoody-pipe", multibyte_over),
        ("x-hoody-pipe", "small"),
    ]
    assert metadata_headers(headers) == [("X-Piping", at_limit), ("X-Hoody-Pipe", "small")]


def test_metadata_headers_none() -> None:
    assert metadata_headers([("content-type", "text/plain"), ("x-other", "1")]) == []


def test_cors_headers_reflect_origin() -> None:
    assert cors_headers("https://app.example.com") == [
        ("Access-Control-Allow-Origin", "https://app.example.com"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "null",
        "",
        " null ",
        "https://\xff.example",  # non-ASCII (a latin-1 decoded byte): crashed every small reply
        "https://\u65e5.example",
        "https://a.example\r\nX-Evil: 1",
        "https://a.example/path",
        "https://user@a.example",
        "a.example",
        "https://a.example:123456",
        "*",
        "https://" + "a" * 293,  # 301 characters: longer than any real origin
    ],
)
def test_cors_headers_without_a_valid_origin_is_star(origin: str | None) -> None:
    assert cors_headers(origin) == [("Access-Control-Allow-Origin", "*")]


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8080",
        "https://a-b.example.co",
        "http://[::1]:9000",
        "app+x.y://h",
        " https://a.b ",
        "https://" + "a" * 253 + ":65535",  # the longest host name, and a port
    ],
)
def test_valid_origins_are_reflected(origin: str) -> None:
    assert cors_headers(origin)[0] == ("Access-Control-Allow-Origin", origin.strip())


@pytest.mark.parametrize("origin", ["nu\tll", "null\x00", "\x00"])
def test_cors_headers_an_origin_that_is_null_or_empty_once_cleaned_is_star(origin: str) -> None:
    # Found by the fuzz tests: the `null` check ran before the controls were stripped, so `nu<TAB>ll`
    # (a tab inside a header value passes h11) came back as `null` with credentials allowed.
    assert cors_headers(origin) == [("Access-Control-Allow-Origin", "*")]


def test_preflight_headers_with_origin() -> None:
    assert preflight_headers("https://app.example.com", private_network=False) == [
        ("Access-Control-Allow-Origin", "https://app.example.com"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS"),
        (
            "Access-Control-Allow-Headers",
            "Content-Type, Content-Disposition, Authorization, X-Piping, X-Hoody-Pipe",
        ),
        ("Access-Control-Max-Age", "86400"),
    ]


def test_preflight_headers_private_network_only_when_asked() -> None:
    asked = preflight_headers(None, private_network=True)
    not_asked = preflight_headers(None, private_network=False)
    assert ("Access-Control-Allow-Private-Network", "true") in asked
    assert [h for h in not_asked if h[0] == "Access-Control-Allow-Private-Network"] == []
    assert asked == [*not_asked, ("Access-Control-Allow-Private-Network", "true")]
    assert not_asked[0] == ("Access-Control-Allow-Origin", "*")
    assert [h for h in not_asked if h[0] == "Access-Control-Allow-Credentials"] == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("5", 5),
        ("005", 5),
        (" 42 ", 42),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", None),
        ("9999999999999999999", None),
        ("10000000000000000000", None),
        ("-1", None),
        ("+5", None),
        ("1e3", None),
        ("0x10", None),
        ("5, 5", None),
        ("", None),
        ("abc", None),
        ("5\n", 5),
        # the spec's ^\d{1,19}$ means ASCII digits; other Unicode decimal digits are not a length
        ("١٢", None),
    ],
)
def test_body_info_content_length(raw: str, expected: int | None) -> None:
    info = body_info([("content-length", raw)])
    assert info.content_length == expected


def test_body_info_without_content_length() -> None:
    assert body_info([]) == BodyInfo("application/octet-stream", None, None, ())


def test_body_info_never_has_length_with_transfer_encoding() -> None:
    info = body_info([("content-length", "5"), ("transfer-encoding", "chunked")])
    assert info.content_length is None


def test_body_info_plain() -> None:
    headers = [
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "11"),
        ("content-disposition", 'inline; filename="a.html"'),
        ("x-piping", "meta"),
    ]
    assert body_info(headers) == BodyInfo(
        content_type="text/plain; charset=utf-8",
        disposition='inline; filename="a.html"',
        content_length=11,
        metadata=(("X-Piping", "meta"),),
    )


def test_body_info_multipart_file_part() -> None:
    headers = [
        ("content-type", "multipart/form-data; boundary=xyz"),
        ("content-length", "500"),
        ("x-hoody-pipe", "m"),
    ]
    info = body_info(headers, multipart_part=("image/png", 'form-data; name="file"; filename="cat.png"'))
    assert info == BodyInfo(
        content_type="image/png",
        disposition='form-data; name="file"; filename="cat.png"',
        content_length=None,
        metadata=(("X-Hoody-Pipe", "m"),),
    )


def test_body_info_multipart_part_type_is_sanitized() -> None:
    info = body_info([], multipart_part=("image/svg+xml", 'form-data; name="f"; filename="x.svg"'))
    assert info.content_type == "text/plain"


def test_receiver_headers_plain() -> None:
    info = body_info([("content-type", "text/plain"), ("content-length", "5")])
    headers = receiver_headers(
        info, origin=None, download=None, filename=None, framing_headers=[("Content-Length", "5")]
    )
    assert headers == [
        ("Content-Type", "text/plain"),
        ("Content-Length", "5"),
        ("X-Robots-Tag", "none"),
        ("Cache-Control", "no-store"),
        ("Content-Security-Policy", "sandbox"),
        ("X-Content-Type-Options", "nosniff"),
        ("Access-Control-Allow-Origin", "*"),
    ]


def test_receiver_headers_with_metadata_disposition_and_origin() -> None:
    info = body_info(
        [
            ("content-type", "application/zip"),
            ("content-disposition", 'inline; filename="a.zip"'),
            ("x-piping", "p"),
            ("x-hoody-pipe", "h"),
        ]
    )
    headers = receiver_headers(
        info,
        origin="https://app.example.com",
        download=None,
        filename=None,
        framing_headers=[("Transfer-Encoding", "chunked")],
    )
    assert headers == [
        ("Content-Type", "application/zip"),
        ("Content-Disposition", 'attachment; filename="a.zip"'),
        ("Transfer-Encoding", "chunked"),
        ("X-Piping", "p"),
        ("X-Hoody-Pipe", "h"),
        ("Access-Control-Expose-Headers", "X-Piping, X-Hoody-Pipe"),
        ("X-Robots-Tag", "none"),
        ("Cache-Control", "no-store"),
        ("Content-Security-Policy", "sandbox"),
        ("X-Content-Type-Options", "nosniff"),
        ("Access-Control-Allow-Origin", "https://app.example.com"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


def test_receiver_headers_expose_only_with_metadata() -> None:
    info = body_info([("x-piping", "x" * 9000)])  # dropped: over the cap
    headers = receiver_headers(info, origin=None, download=None, filename=None, framing_headers=[])
    names = [name for name, _ in headers]
    assert "Access-Control-Expose-Headers" not in names
    assert "X-Piping" not in names


@pytest.mark.parametrize(
    ("download", "filename", "expected"),
    [
        (None, None, 'inline; filename="a.png"'),
        (True, None, 'attachment; filename="a.png"'),
        (False, None, None),
        (None, "b.png", "attachment; filename=\"b.png\"; filename*=UTF-8''b.png"),
    ],
)
def test_receiver_headers_per_receiver_disposition(
    download: bool | None, filename: str | None, expected: str | None
) -> None:
    info = body_info([("content-type", "image/png"), ("content-disposition", 'inline; filename="a.png"')])
    headers = receiver_headers(info, origin=None, download=download, filename=filename, framing_headers=[])
    assert [value for name, value in headers if name == "Content-Disposition"] == (
        [expected] if expected else []
    )


def test_first_and_strip_controls() -> None:
    assert first([("a", "1"), ("b", "2"), ("a", "3")], "a") == "1"
    assert first([("a", "1")], "b") is None
    assert strip_controls("a\x00\x01\x1f\x7fb c") == "ab c"


def test_reply_header_values_can_never_break_a_head() -> None:
    reply = Reply(200, (("X-A", "a\r\nSet-Cookie: x"), ("X-B", "\u65e5\x00b")), b"")
    assert reply.headers == (("X-A", "aSet-Cookie: x"), ("X-B", "?b"))
