# Complete small responses (errors, preflight, plain texts): status, headers and the whole body.
# Invariant: nosniff and an exact Content-Length always, CORS on all but health, X-Pipe-Error on errors.
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..errors import PipeError
from .framing import LAST_CHUNK, encode_chunk, field_value, render_head
from .headers import SAFETY_HEADERS, cors_headers, preflight_headers

TEXT_PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def __post_init__(self) -> None:
        # the one place a small reply's header values are checked (heads of pipes: `render_head`)
        object.__setattr__(self, "headers", tuple((name, field_value(v)) for name, v in self.headers))


def reply(
    status: int,
    body: bytes,
    *,
    content_type: str | None,
    origin: str | None,
    extra: tuple[tuple[str, str], ...] = (),
    cors: bool = True,
) -> Reply:
    """A whole small reply; `cors=False` for what only same-origin or non-browser callers may read."""
    headers: list[tuple[str, str]] = []
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    headers.append(("Content-Length", str(len(body))))
    headers += extra
    headers += SAFETY_HEADERS
    if cors:
        headers += cors_headers(origin)
    return Reply(status, tuple(headers), body)


def error_reply(error: PipeError, *, origin: str | None) -> Reply:
    extra = (("X-Pipe-Error", error.code.value), ("Cache-Control", "no-store"))
    return reply(
        error.status,
        (error.message + "\n").encode("utf-8"),
        content_type=TEXT_PLAIN,
        origin=origin,
        extra=extra + error.extra_headers,
    )


def refusal(error: PipeError) -> bytes:
    """A whole error response that closes its connection, as bytes: for replies made without a
    request to answer (a head h11 could not parse, a connection over the limit)."""
    reply = error_reply(error, origin=None)
    return render_head("1.1", reply.status, [*reply.headers, ("Connection", "close")]) + reply.body


def preflight_reply(*, origin: str | None, private_network: bool) -> Reply:
    headers = [*preflight_headers(origin, private_network=private_network)]
    headers += SAFETY_HEADERS
    headers.append(("Content-Length", "0"))
    return Reply(200, tuple(headers), b"")


def streamed_headers(
    content_type: str, origin: str | None, extra: tuple[tuple[str, str], ...] = ()
) -> list[tuple[str, str]]:
    """The headers of a streamed 200 response (status lines, events), framing aside."""
    return [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        *extra,
        *SAFETY_HEADERS,
        *cors_headers(origin),
    ]


@functools.lru_cache(maxsize=256)
def _streamed_head(
    http_version: str, content_type: str, origin: str | None, extra: tuple[tuple[str, str], ...]
) -> bytes:
    """A StreamedReply's head; the same few are rendered for nearly every sender (memoized)."""
    headers = [*streamed_headers(content_type, origin, extra), ("Connection", "close")]
    if http_version == "1.1":
        headers.append(("Transfer-Encoding", "chunked"))
    return render_head(http_version, 200, headers)


@dataclass(frozen=True, slots=True)
class StreamedReply:
    """A 200 response sent in pieces (status lines, events): chunked to HTTP/1.1 clients, plain
    and ended by closing the connection for HTTP/1.0 ones."""

    http_version: str

    @property
    def chunked(self) -> bool:
        return self.http_version == "1.1"

    def head(
        self, content_type: str, *, origin: str | None, extra: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        return _streamed_head(self.http_version, content_type, origin, extra)

    def frame(self, data: bytes) -> bytes:
        return encode_chunk(data) if self.chunked else data

    @property
    def end(self) -> bytes:
        return LAST_CHUNK if self.chunked else b""


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def interim_continue(expect: str | None, http_version: str) -> bytes:
    """`Expect: 100-continue` from an HTTP/1.1 client is answered at once (its body is wanted:
    the sender streams into a pipe); HTTP/1.0 has no interim responses. Else nothing."""
    if http_version == "1.1" and (expect or "").strip().lower() == "100-continue":
        return CONTINUE
    return b""
