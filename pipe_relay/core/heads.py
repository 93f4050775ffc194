# Strict request heads: what RFC 9112 lets a server refuse and h11 lets through, refused here.
# Invariant: pure checks of a parsed head (no I/O); each refusal is one PipeError with its status.
from __future__ import annotations

import re

from ..errors import ErrorCode, PipeError, pipe_error
from .headers import valid_content_length
from .routing import Request

MAX_HEADER_LINES = 100
SUPPORTED_VERSIONS = ("1.0", "1.1")
_FOLD = re.compile(rb"\n[ \t]")


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


def transfer_coding_error(detail: str) -> PipeError:
    """A transfer coding other than chunked (h11 refuses it first): a 400, as any other bad head."""
    return _bad(f"unsupported transfer coding ({detail.rstrip('.')})")


def _bad(detail: str) -> PipeError:
    return pipe_error(ErrorCode.BAD_REQUEST, detail=detail)
