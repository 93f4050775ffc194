# Strict request heads: what RFC 9112 lets a server refuse and h11 lets through, refused here.
# Invariant: pure checks of a parsed head (no I/O); each refusal is one PipeError with its status.
from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import ErrorCode, PipeError, pipe_error
from .headers import valid_content_length
from .routing import Request

MAX_HEADER_LINES = 100
SUPPORTED_VERSIONS = ("1.0", "1.1")
_FOLD = re.compile(rb"\n[ \t]")
_QUOTED_BYTES = re.compile(r":?\s*(?:bytearray\()?b['\"].*$", re.DOTALL)


KEPT_HEADERS = frozenset(
    {
        b"host",
        b"origin",
        b"accept",
        b"user-agent",
        b"expect",
        b"content-type",
        b"content-disposition",
        b"content-range",
        b"service-worker",
        b"x-forwarded-proto",
        b"x-forwarded-for",
        b"access-control-request-private-network",
        b"x-piping",
        b"x-hoody-pipe",
        b"authorization",  # (with --policy: a party's Basic credentials)
    }
)
"""The request headers the server reads (besides framing); every other one is dropped at once."""
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
MAX_KEPT_VALUE = 8 * 1024
"""A kept header's longest value (X-Piping's cap); a longer one is dropped (framing headers: never)."""


def kept_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """The headers a request keeps while it waits or streams, as (lower-case name, value): a head
    of thousands of small headers costs what its few useful ones cost, not 18 times its size."""
    kept = []
    for name, value in raw:
        lowered = name.lower()
        if lowered in _FRAMING_HEADERS or (lowered in KEPT_HEADERS and len(value) <= MAX_KEPT_VALUE):
            kept.append((lowered.decode("latin-1"), value.decode("latin-1")))
    return tuple(kept)


def head_lines(data: bytes | bytearray) -> int:
    """Lines of the request head at the start of `data` (up to its blank line, or all of `data`),
    counted before h11 parses it: a head of 7,000 tiny headers costs h11 10 ms, the count 10 µs."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    ends = [end for end in (crlf + 2 if crlf >= 0 else -1, lf + 1 if lf >= 0 else -1) if end >= 0]
    return data.count(b"\n", 0, min(ends) if ends else len(data))


def has_obs_fold(head: bytes | memoryview) -> bool:
    """Does a raw request head continue a header line on the next (obs-fold, RFC 9112 5.2)?"""
    return _FOLD.search(head) is not None


def check_head(request: Request, *, header_lines: int, folded: bool) -> None:
    """Refuse what a strict server must not serve (RFC 9112), so that nothing in front of us (a
    proxy) can read the same bytes as another request than we do. Raises PipeError."""
    if request.http_version not in SUPPORTED_VERSIONS:
        raise pipe_error(ErrorCode.UNSUPPORTED_VERSION, version=request.http_version[:16])
    if header_lines > MAX_HEADER_LINES:
        raise pipe_error(ErrorCode.TOO_MANY_HEADERS, max=MAX_HEADER_LINES)
    if folded:
        raise _bad("a header line is folded (obs-fold)")
    length = request.header("content-length")
    if request.header("transfer-encoding") is not None and length is not None:
        raise _bad("both Transfer-Encoding and Content-Length")
    if length is not None and not valid_content_length(length):
        raise _bad("invalid Content-Length")


def parser_reason(text: str) -> str:
    """h11's reason for refusing a head, without the Python repr of the bytes it quotes
    (`illegal header line: bytearray(b'...')` is `illegal header line`)."""
    return _QUOTED_BYTES.sub("", text).rstrip(". ") or "malformed request head"


def parser_error(status_hint: int, text: str, *, max_head_size: int) -> PipeError:
    """The refusal of a head h11 refused, by its status hint and message: too large (431), a transfer
    coding other than chunked (501), else malformed (400)."""
    if status_hint == 431:
        return pipe_error(ErrorCode.HEAD_TOO_LARGE, max=max_head_size)
    if status_hint == 501:
        return transfer_coding_error(text)
    return _bad(parser_reason(text))


def transfer_coding_error(detail: str) -> PipeError:
    """A transfer coding other than chunked (h11 refuses it first): a 400, as any other bad head."""
    return _bad(f"unsupported transfer coding ({detail.rstrip('.')})")


def _bad(detail: str) -> PipeError:
    return pipe_error(ErrorCode.BAD_REQUEST, detail=detail)
