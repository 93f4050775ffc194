# The sans-IO HTTP/2 head helpers: preface detection, request fields to a Request, response fields.
# Invariant: plain sync tests, no I/O.
from __future__ import annotations

import pytest

from pipe_relay.core.http2 import PREFACE, preface_seen, request_from_fields, response_fields
from pipe_relay.errors import ErrorCode, PipeError


@pytest.mark.parametrize(
    ("data", "seen"),
    [
        (PREFACE, True),
        (PREFACE + b"\x00\x00\x12\x04", True),
        (PREFACE[:10], None),
        (b"", None),
        (b"PRI * HTTP/2.0\r\n\r\nXX", False),
        (b"GET / HTTP/2.0\r\n", False),
        (b"PUT /x HTTP/1.1\r\n", False),
    ],
)
def test_the_preface_is_told_apart_from_a_request_line(data: bytes, seen: bool | None) -> None:
    assert preface_seen(data) is seen


def test_request_fields_become_the_request_an_http11_head_would() -> None:
    request = request_from_fields(
        [
            (b":method", b"PUT"),
            (b":scheme", b"https"),
            (b":authority", b"relay.example"),
            (b":path", b"/secret?n=2"),
            (b"content-length", b"12"),
            (b"x-unread", b"dropped"),
            (b"origin", b"https://app.example"),
        ]
    )
    assert (request.method, request.target, request.http_version) == ("PUT", "/secret?n=2", "2")
    assert request.headers == (
        ("content-length", "12"),
        ("origin", "https://app.example"),
        ("host", "relay.example"),
    )


def test_a_host_field_wins_over_authority() -> None:
    request = request_from_fields(
        [(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a"), (b"host", b"b")]
    )
    assert request.header("host") == "b"


@pytest.mark.parametrize(
    "fields",
    [
        [(b":path", b"/x")],
        [(b":method", b"GET")],
        [(b":method", b"PUT"), (b":path", b"/x"), (b"content-length", b"-1")],
    ],
)
def test_bad_request_fields_are_a_400(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(PipeError) as caught:
        request_from_fields(fields)
    assert caught.value.code is ErrorCode.BAD_REQUEST and caught.value.status == 400


@pytest.mark.parametrize("byte", [b"\x1b", b"\x01", b"\t", b"\x7f", b" ", b"\x80", b"\xe6"])
def test_a_path_h11_would_refuse_is_the_same_400(byte: bytes) -> None:
    """The same error as h11's for that request line, so both front ends say the same."""
    with pytest.raises(PipeError) as caught:
        request_from_fields([(b":method", b"GET"), (b":path", b"/a" + byte + b"b")])
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert caught.value.message == "[ERROR] Malformed request: illegal request line."


def test_every_printable_path_byte_is_taken() -> None:
    path = b"/" + bytes(range(0x21, 0x7F))
    assert request_from_fields([(b":method", b"GET"), (b":path", path)]).target == path.decode()


@pytest.mark.parametrize(("count", "refused"), [(100, False), (101, True)])
def test_more_than_100_headers_are_a_431_as_over_http11(count: int, refused: bool) -> None:
    fields = [(b":method", b"GET"), (b":path", b"/x")] + [(b"x-h%d" % i, b"v") for i in range(count)]
    if not refused:
        assert request_from_fields(fields).target == "/x"
        return
    with pytest.raises(PipeError) as caught:
        request_from_fields(fields)
    assert (caught.value.code, caught.value.status) == (ErrorCode.TOO_MANY_HEADERS, 431)
    assert caught.value.message == "[ERROR] Too many header lines (max 100)."


def test_response_fields_drop_what_http2_forbids() -> None:
    fields = response_fields(
        200,
        [
            ("Content-Type", "text/plain"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("X-Pipe-Error", "E"),
        ],
    )
    assert fields == [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-pipe-error", b"E")]
