# Tests for the strict request-head checks: versions, header counts, folding, framing headers.
from __future__ import annotations

import pytest

from pipe_relay.core.heads import (
    MAX_HEADER_LINES,
    check_head,
    has_obs_fold,
    head_lines,
    parser_error,
    parser_reason,
)
from pipe_relay.core.routing import Request
from pipe_relay.errors import ErrorCode, PipeError


def refused(request: Request, *, header_lines: int = 1, folded: bool = False) -> PipeError:
    with pytest.raises(PipeError) as info:
        check_head(request, header_lines=header_lines, folded=folded)
    return info.value


def put(*headers: tuple[str, str], version: str = "1.1") -> Request:
    return Request("PUT", "/x", (("host", "h"), *headers), version)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_supported_versions_pass(version: str) -> None:
    check_head(put(("content-length", "3"), version=version), header_lines=2, folded=False)


@pytest.mark.parametrize("version", ["0.9", "2.0", "3.0", "9.9", "1.2"])
def test_other_versions_are_505(version: str) -> None:
    error = refused(put(version=version))
    assert (error.code, error.status) == (ErrorCode.UNSUPPORTED_VERSION, 505)
    assert error.message == f"[ERROR] HTTP version {version} is not supported: use HTTP/1.1."


def test_header_lines_up_to_the_limit_pass_and_one_more_is_431() -> None:
    assert MAX_HEADER_LINES == 100
    check_head(put(), header_lines=100, folded=False)
    error = refused(put(), header_lines=101)
    assert (error.code, error.status) == (ErrorCode.TOO_MANY_HEADERS, 431)
    assert error.message == "[ERROR] Too many header lines (max 100)."


def test_a_folded_head_is_400() -> None:
    error = refused(put(), folded=True)
    assert (error.code, error.status) == (ErrorCode.BAD_REQUEST, 400)
    assert error.message == "[ERROR] Malformed request: a header line is folded (obs-fold)."


@pytest.mark.parametrize(
    ("head", "folded"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", True),
        (b"GET / HTTP/1.1\nHost: x\nX-A: a\n b\n\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a b\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A:\tb \r\n\r\n", False),
    ],
)
def test_obs_fold_is_found_in_a_raw_head(head: bytes, folded: bool) -> None:
    assert has_obs_fold(head) is folded
    assert has_obs_fold(memoryview(head)) is folded


def test_transfer_encoding_with_content_length_is_400() -> None:
    error = refused(put(("transfer-encoding", "chunked"), ("content-length", "5")))
    assert (error.code, error.status) == (ErrorCode.BAD_REQUEST, 400)
    assert error.message == "[ERROR] Malformed request: both Transfer-Encoding and Content-Length."


@pytest.mark.parametrize(
    "length", ["18446744073709551616", "9223372036854775808", "00000000000000000000", "-1", "1e3", ""]
)
def test_an_invalid_content_length_is_400(length: str) -> None:
    error = refused(put(("content-length", length)))
    assert (error.code, error.status) == (ErrorCode.BAD_REQUEST, 400)
    assert error.message == "[ERROR] Malformed request: invalid Content-Length."


@pytest.mark.parametrize("length", ["0", "9223372036854775807", "0000000000000000001"])
def test_content_lengths_up_to_2_63_minus_1_pass(length: str) -> None:
    check_head(put(("content-length", length)), header_lines=2, folded=False)


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\nmore\n", 2),
        (b"GET / HTTP/1.1\nHost: x\n\nbody\n", 2),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n", 3),  # not complete yet: every line so far
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 7000, 7001),
        (b"", 0),
    ],
)
def test_head_lines_are_counted_up_to_the_blank_line(data: bytes, lines: int) -> None:
    assert head_lines(data) == lines
    assert head_lines(bytearray(data)) == lines


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("illegal header line: bytearray(b'Host: evil\\x0bx')", "illegal header line"),
        ("illegal request line: b'GET'", "illegal request line"),
        ("Missing mandatory Host header", "Missing mandatory Host header"),
        ("bad Content-Length.", "bad Content-Length"),
        ("b'x'", "malformed request head"),
    ],
)
def test_the_parsers_reason_never_quotes_python_reprs(text: str, reason: str) -> None:
    assert parser_reason(text) == reason


@pytest.mark.parametrize(
    ("hint", "text", "code", "line"),
    [
        (
            431,
            "Request header too large",
            "HEAD_TOO_LARGE",
            "[ERROR] Request head too large (max 8192 bytes).",
        ),
        (
            501,
            "Only Transfer-Encoding: chunked is supported.",
            "BAD_REQUEST",
            "[ERROR] Malformed request: unsupported transfer coding"
            " (Only Transfer-Encoding: chunked is supported).",
        ),
        (
            400,
            "illegal request line: b'GET'",
            "BAD_REQUEST",
            "[ERROR] Malformed request: illegal request line.",
        ),
    ],
)
def test_a_head_the_parser_refused_gets_the_error_its_status_hint_names(
    hint: int, text: str, code: str, line: str
) -> None:
    error = parser_error(hint, text, max_head_size=8192)
    assert (error.code.name, str(error)) == (code, line)
