# Request-head edges the mutation run showed unpinned: kept headers, line counts, coding errors.
# Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

import pytest

from pipe_relay.core.heads import MAX_KEPT_VALUE, check_head, head_lines, kept_headers, transfer_coding_error
from pipe_relay.core.routing import Request
from pipe_relay.errors import ErrorCode, PipeError


def test_kept_headers_keep_the_read_ones_lower_cased_in_order() -> None:
    raw = [
        (b"Host", b"h"),
        (b"X-Unread", b"dropped"),
        (b"Content-Type", b"text/plain"),
        (b"x-piping", b"caf\xe9"),  # latin-1 both ways: the bytes as the sender wrote them
        (b"Cookie", b"c=1"),
        (b"HOST", b"second"),
    ]
    assert kept_headers(raw) == (
        ("host", "h"),
        ("content-type", "text/plain"),
        ("x-piping", "café"),
        ("host", "second"),
    )


def test_a_kept_value_up_to_8_kib_is_kept_and_a_longer_one_dropped() -> None:
    assert MAX_KEPT_VALUE == 8192
    at_limit, over = b"a" * 8192, b"b" * 8193
    assert kept_headers([(b"x-piping", at_limit), (b"x-hoody-pipe", over)]) == (("x-piping", "a" * 8192),)


def test_framing_headers_are_kept_whatever_their_length() -> None:
    long = b"1" * 9000
    raw = [(b"Content-Length", long), (b"Transfer-Encoding", b"chunked"), (b"X-Other", b"x")]
    assert kept_headers(raw) == (("content-length", "1" * 9000), ("transfer-encoding", "chunked"))


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        # only the first blank line ends the head, whatever the body holds
        (b"PUT / HTTP/1.1\r\nHost: x\r\n\r\nbody\r\n\r\nmore\r\n\r\n", 2),
        (b"PUT / HTTP/1.1\nHost: x\n\nbody\n\nmore\n\n", 2),
        # a blank line at the very start (crlf or lf at index 0)
        (b"\r\n\r\nA\nB\nC\n", 1),
        (b"\n\nA\nB\nC\n", 1),
        # the first line counts from byte 0
        (b"\nA\r\n\r\n", 2),
        # the earlier of the two kinds of blank line ends it
        (b"GET / HTTP/1.1\nA: b\n\nC: d\r\n\r\n", 2),
        (b"GET / HTTP/1.1\r\nA: b\r\n\r\nC: d\n\n", 2),
    ],
)
def test_head_lines_stop_at_the_first_blank_line(data: bytes, lines: int) -> None:
    assert head_lines(data) == lines


def test_an_unsupported_version_is_shown_cut_to_16_characters() -> None:
    request = Request("PUT", "/x", (("host", "h"),), "1" * 40)
    with pytest.raises(PipeError) as info:
        check_head(request, header_lines=1, folded=False)
    assert (info.value.code, info.value.status) == (ErrorCode.UNSUPPORTED_VERSION, 505)
    assert info.value.message == f"[ERROR] HTTP version {'1' * 16} is not supported: use HTTP/1.1."


@pytest.mark.parametrize(
    ("detail", "shown"),
    [
        ("Only Transfer-Encoding: chunked is supported", "Only Transfer-Encoding: chunked is supported"),
        ("unknown coding GZIPX.", "unknown coding GZIPX"),
        (".gzip...", ".gzip"),
    ],
)
def test_a_transfer_coding_error_is_a_400_without_a_trailing_dot(detail: str, shown: str) -> None:
    error = transfer_coding_error(detail)
    assert (error.code, error.status) == (ErrorCode.BAD_REQUEST, 400)
    assert error.message == f"[ERROR] Malformed request: unsupported transfer coding ({shown})."
