# Carrying one request to the worker that owns its pipe, where the connection cannot move (TLS, HTTP/2).
# Invariant: a reply cut on the owner's side is cut here too (reset), never ended as if complete.
"""The request goes to the owner as HTTP/1.1 over a Unix socket (`Siblings.carry_to`), its body (a
sender's) after it; the owner's reply comes back as the front end's own response (status, headers,
body), framed as the client's protocol frames it. Both directions are relays of the byte engine,
so a body ends only as a whole one: the owner's reply ends short, and the client's response is
reset; the client's upload ends short, and the owner reads an unfinished body (a sender gone)."""

from __future__ import annotations

import contextlib
import socket

import h11
import trio

from ..config import Config
from ..core.framing import ChunkedDecoder, EmptyDecoder, Framing, LengthDecoder
from ..core.routing import Request
from ..errors import TransferError
from .body import SocketBody, framed_by
from .engine import BufferEngine, Sink, SocketWriter
from .link import Body, CloseMode, Headers, Responder
from .workers import Siblings, owner_unavailable

_NOT_CARRIED = {"transfer-encoding", "expect"}
"""Of the headers a request keeps (core/heads.py), those of its own hop: its framing is made anew
here, and its `Expect: 100-continue` is answered here."""
_RESPONSE_DROPPED = {"connection", "keep-alive", "transfer-encoding", "content-length"}
HEAD_LIMIT = 64 * 1024


class _Quiet:
    """Relay events nobody needs here: the owner's transfer counts its own progress."""

    def progress(self, moved: int) -> None:
        pass

    async def receiver_dropped(self, sink: Sink, alive: int) -> None:
        pass


async def carry(
    front: Responder,
    request: Request,
    *,
    siblings: Siblings,
    owner: int,
    peer: str,
    protocol: str,
    has_body: bool,
    config: Config,
) -> None:
    """Answer `request` on `front` with the owner's answer to it."""
    origin = request.header("origin")
    upstream = await siblings.carry_to(owner, peer, protocol)
    if upstream is None:
        await front.send_error(owner_unavailable(), origin)
        return
    try:
        await _exchange(front, request, upstream, has_body=has_body, config=config)
    finally:
        upstream.close()


async def _exchange(
    front: Responder, request: Request, upstream: socket.socket, *, has_body: bool, config: Config
) -> None:
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
    length = request.header("content-length")
    chunked = has_body and length is None
    headers = [(name, value) for name, value in request.headers if name not in _NOT_CARRIED]
    if not any(name == "host" for name, _ in headers):
        headers.insert(0, ("host", "localhost"))
    if chunked:
        headers.append(("transfer-encoding", "chunked"))
    elif not has_body and length is not None:
        headers = [(name, value) for name, value in headers if name != "content-length"]
    headers.append(("connection", "close"))
    head = client.send(
        h11.Request(
            method=request.method,
            target=request.target.encode("latin-1", "replace"),
            headers=[(n.encode("latin-1"), v.encode("latin-1", "replace")) for n, v in headers],
        )
    )
    engine = BufferEngine(idle_timeout=0)  # (the owner keeps the time: its TTL, its idle limit)
    writer = SocketWriter(upstream.fileno())
    async with trio.open_nursery() as nursery:
        if has_body:
            if request.header("expect") is not None:
                await front.answer_continue(request)
            body = front.open_body(request, buffer_size=config.buffer_size, idle_timeout=0)
            upload = Sink(writer, Framing.CHUNKED if chunked else Framing.LENGTH, head or b"")
            nursery.start_soon(_upload, engine, body, upload, upstream)
        else:
            await _send_all(writer, head or b"")
            nursery.start_soon(_leave_with, front, nursery.cancel_scope)
        await _download(front, request, client, upstream, engine, config)
        nursery.cancel_scope.cancel()  # (an upload the owner no longer reads: it answered already)


async def _upload(engine: BufferEngine, body: Body, upload: Sink, upstream: socket.socket) -> None:
    """The client's body to the owner; cut short, the owner sees it unfinished (no last chunk)."""
    try:
        await engine.relay(body, [upload], _Quiet())
    except TransferError:
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)
    finally:
        body.release()


async def _leave_with(front: Responder, scope: trio.CancelScope) -> None:
    """A request without a body: its client leaving ends the carried exchange (the owner sees it go)."""
    await front.wait_gone()
    scope.cancel()


async def _download(
    front: Responder,
    request: Request,
    client: h11.Connection,
    upstream: socket.socket,
    engine: BufferEngine,
    config: Config,
) -> None:
    """The owner's reply to the client, as the client's protocol frames it."""
    response = await _response_head(client, upstream)
    if response is None:
        front.close_mode = CloseMode.ABORT
        return
    status, kept, decoder = response
    if request.method == "HEAD":
        decoder = EmptyDecoder()
    prefix = client.trailing_data[0]
    source = SocketBody(upstream, decoder, prefix, buffer_size=config.buffer_size, idle_timeout=0)
    length = decoder.remaining if isinstance(decoder, LengthDecoder) else None

    def response_headers(framing: Headers) -> Headers:
        return (*kept, *framing)

    sink = front.open_response(request, length, response_headers, status=status)
    try:
        await engine.relay(source, [sink], _Quiet())
    except TransferError:
        front.close_mode = CloseMode.ABORT  # (the owner's reply ended short: so does this one)


async def _response_head(
    client: h11.Connection, upstream: socket.socket
) -> tuple[int, Headers, LengthDecoder | ChunkedDecoder] | None:
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            try:
                data = upstream.recv(HEAD_LIMIT)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(upstream)
                continue
            except OSError:
                return None
            client.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if not isinstance(event, h11.Response):
            return None
        kept: list[tuple[str, str]] = []
        framing: dict[str, str] = {}
        for raw_name, raw_value in event.headers.raw_items():
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            lower = name.lower()
            if lower in ("content-length", "transfer-encoding"):
                framing[lower] = value
            if lower not in _RESPONSE_DROPPED:
                kept.append((name, value))
        decoder = framed_by(framing.get("transfer-encoding"), framing.get("content-length"))
        return event.status_code, tuple(kept), decoder


async def _send_all(writer: SocketWriter, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[writer.write_now([view]) :]
        except BlockingIOError:
            await writer.wait_writable()
