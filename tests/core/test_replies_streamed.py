# StreamedReply: the head, framing and end of a 200 sent in pieces, for HTTP/1.1 and HTTP/1.0.
# Invariant: pure and sync; heads are compared byte for byte (the policy headers come from headers.py).
from __future__ import annotations

from pipe_relay.core.framing import render_head
from pipe_relay.core.headers import SAFETY_HEADERS, cors_headers
from pipe_relay.core.replies import StreamedReply


def expected_head(version: str, origin: str | None, extra: list[tuple[str, str]]) -> bytes:
    headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"), *extra]
    headers += [*SAFETY_HEADERS, *cors_headers(origin), ("Connection", "close")]
    if version == "1.1":
        headers.append(("Transfer-Encoding", "chunked"))
    return render_head(version, 200, headers)


def test_http11_streamed_reply_is_chunked() -> None:
    reply = StreamedReply("1.1")
    assert reply.chunked is True
    head = reply.head("text/event-stream", origin="https://a.example", extra=(("X-Accel-Buffering", "no"),))
    assert head == expected_head("1.1", "https://a.example", [("X-Accel-Buffering", "no")])
    assert head.startswith(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
    )
    assert head.endswith(b"\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert reply.frame(b"data: 1\n\n") == b"9\r\ndata: 1\n\n\r\n"
    assert reply.end == b"0\r\n\r\n"


def test_http10_streamed_reply_is_plain_and_ends_by_closing() -> None:
    reply = StreamedReply("1.0")
    assert reply.chunked is False
    head = reply.head("text/event-stream", origin=None)
    assert head == expected_head("1.0", None, [])
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert head.endswith(b"\r\nConnection: close\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert reply.frame(b"data: 1\n\n") == b"data: 1\n\n"
    assert reply.end == b""
