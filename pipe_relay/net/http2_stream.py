# HTTP/2 streams: one request stream as the hub sees it (a Responder), its body, its response writer.
# Invariant: its window opens only as the relay takes its body; a cut response ends in RST_STREAM only.
"""The stream side of `http2`: what a stream needs from its connection is the `Carrier` protocol
(the h2 state, the outbound buffer and its room), so this module never imports the connection."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Protocol

import h2.connection
import h2.errors
import h2.exceptions
import trio

from ..config import Config
from ..core.framing import Framing
from ..core.http2 import response_fields
from ..core.replies import Reply, error_reply, streamed_headers
from ..core.routing import Request
from ..errors import PipeError, TransferError, TransferFailure
from .engine import Segment, Sink, wait_ready
from .link import WRITE_TIMEOUT, CloseMode, Headers, Role
from .telemetry import TALLY, Exchange, log_exchange

log = logging.getLogger("pipe_relay")

OUT_LIMIT = 1 << 20
"""Outbound bytes buffered per connection before writers wait for the socket."""
MAX_SEGMENTS = 32


class Carrier(Protocol):
    """What a stream needs from its HTTP/2 connection."""

    h2: h2.connection.H2Connection
    config: Config
    peer: str
    closed: bool

    @property
    def buffered(self) -> int: ...

    def flush(self) -> None: ...

    def acknowledge(self, size: int, stream_id: int) -> None: ...

    async def room(self) -> None: ...

    def stream_done(self, stream_id: int) -> None: ...

    def linger(self, stream_id: int) -> None: ...

    def sent_data(self, size: int) -> None: ...

    def party_stream(self) -> None: ...


class Http2Body:
    """A request body as h2 hands it over: held until the relay takes it, then its window opens."""

    wire = None

    def __init__(self, stream: Http2Stream) -> None:
        self._stream = stream
        self._pieces: deque[tuple[bytes, int]] = deque()
        self.ended = False
        self.idle_timeout = 0.0
        self.step = 1 << 20
        self._arrived = trio.Event()
        self.received = 0
        self.discarding = False
        """Nobody will read this body: what came is dropped, and the connection drops what comes."""

    def __repr__(self) -> str:
        return f"<Http2Body stream={self._stream.stream_id} held={len(self._pieces)} ended={self.ended}>"

    def feed(self, data: bytes, flow_length: int) -> None:
        """(Not while `discarding`: the connection drops what comes then.)"""
        self._pieces.append((data, flow_length))
        self._arrived.set()

    def discard(self) -> None:
        """The request's body will not be read (a page, a receiver, an error): drop what is held and
        what comes, giving the window back, so a client cannot park data here."""
        if self.discarding:
            return
        self.discarding = True
        flow = sum(length for _, length in self._pieces)
        self._pieces.clear()
        self._stream.connection.acknowledge(flow, self._stream.stream_id)

    def end(self) -> None:
        self.ended = True
        self._arrived.set()

    def wake(self) -> None:
        self._arrived.set()

    @property
    def ready(self) -> bool:
        return bool(self._pieces) or self.ended

    @property
    def done(self) -> bool:
        return self.ended and not self._pieces

    @property
    def complete_in_prefix(self) -> bool:
        return self.ended

    async def _arrival(self) -> None:
        await self._arrived.wait()

    async def read(self) -> list[Segment]:
        stream = self._stream
        while not self._pieces:
            if self.ended:
                return []
            if stream.is_gone:
                raise TransferError(TransferFailure.SENDER_GONE)
            self._arrived = trio.Event()
            if not await wait_ready(self._arrival, self.idle_timeout):
                raise TransferError(TransferFailure.SENDER_IDLE)
        pieces: list[Segment] = []
        size = flow = 0
        while self._pieces and size < self.step:
            data, length = self._pieces.popleft()
            pieces.append(data)
            size += len(data)
            flow += length
        self.received += size
        stream.connection.acknowledge(flow, stream.stream_id)
        if len(pieces) > MAX_SEGMENTS:
            return [b"".join(pieces)]
        await trio.lowlevel.checkpoint()
        return pieces

    def release(self) -> None:
        return

    async def drain(self, *, limit: int, seconds: float) -> None:
        with trio.move_on_after(seconds):
            while not self.done and self.received < limit and not self._stream.is_gone:
                await self.read()


class Http2Writer:
    """A receiver's response body on an HTTP/2 stream: DATA frames within its flow-control window."""

    __slots__ = ("stream",)

    def __init__(self, stream: Http2Stream) -> None:
        self.stream = stream

    def write_now(self, pieces: list[Segment]) -> int:
        stream = self.stream
        if stream.is_gone:
            raise BrokenPipeError("HTTP/2 stream reset")
        stream.start_response()
        total = sum(len(piece) for piece in pieces)
        if not total:
            stream.connection.flush()
            return 0
        sent = stream.send_data_now(pieces, total)
        if not sent:
            raise BlockingIOError
        return sent

    async def wait_writable(self) -> None:
        await self.stream.wait_room()

    @property
    def splice_fd(self) -> None:
        return None


class Http2StatusStream:
    """A streamed response (status lines, events) on an HTTP/2 stream."""

    def __init__(self, stream: Http2Stream, headers: list[tuple[str, str]]) -> None:
        self._stream = stream
        self._headers = headers

    async def send(self, data: bytes, *, end: bool = False) -> bool:
        stream = self._stream
        if stream.is_gone:
            return False
        stream.pending_head = (200, self._headers)
        with trio.move_on_after(WRITE_TIMEOUT):
            return await stream.send_all(data, end=end)
        return False


class Http2Stream:
    """One request stream: the `Responder` the hub and the pages see."""

    hangup_fd = None

    def __init__(self, connection: Carrier, stream_id: int, exchange: Exchange | None = None) -> None:
        self.connection = connection
        self.exchange = exchange or Exchange("h2")
        """This stream's request, for the access log."""
        self.stream_id = stream_id
        self.body = Http2Body(self)
        self.close_mode = CloseMode.NORMAL
        self.is_gone = False
        self.pending_head: tuple[int, Headers] | None = None
        self.head_sent = False
        self.ended = False
        self._gone = trio.Event()
        self._on_gone: Callable[[], None] | None = None
        self._head_request = False

    def __repr__(self) -> str:
        return f"<Http2Stream {self.stream_id} close={self.close_mode.value} gone={self.is_gone}>"

    @property
    def peer(self) -> str:
        return self.connection.peer

    def gone(self) -> None:
        """The client reset the stream (or the connection ended): whoever waits on it hears at once."""
        self.is_gone = True
        self._gone.set()
        self.body.wake()
        callback, self._on_gone = self._on_gone, None
        if callback is not None:
            callback()

    # the Link ---------------------------------------------------------------------------------

    def peer_closed(self) -> bool:
        return self.is_gone

    async def wait_gone(self) -> None:
        await self._gone.wait()

    async def still_there(self) -> bool:
        """(The connection reads its frames while a party waits, so a client's close is seen.)"""
        return not self.is_gone

    def on_gone(self, callback: Callable[[], None]) -> None:
        self._on_gone = callback

    def serving(self, role: Role) -> None:
        if role is not Role.SENDER:
            self.body.discard()
        if role is not Role.PAGE:
            self.connection.party_stream()

    async def answer_continue(self, request: Request) -> None:
        """(An HTTP/2 client sends its body without waiting for a 100.)"""

    async def send_error(self, error: PipeError, origin: str | None, *, last: bool = False) -> None:
        self.exchange.error = error.code.value
        TALLY.error(error.code)
        await self.send_reply(error_reply(error, origin=origin))

    async def send_reply(self, reply: Reply) -> None:
        """The whole reply, or a reset: a reply that cannot be finished in time never ends short."""
        self.body.discard()
        self.pending_head = (reply.status, reply.headers)
        self.exchange.status = reply.status
        body = b"" if self._head_request else reply.body
        sent = False
        with trio.move_on_after(WRITE_TIMEOUT):
            sent = await self.send_all(body, end=True)
        if not sent:
            self.close_mode = CloseMode.ABORT

    def open_stream(
        self, request: Request, content_type: str, *, extra: Headers = (), answer_continue: bool = False
    ) -> Http2StatusStream:
        self.exchange.status = 200
        return Http2StatusStream(self, streamed_headers(content_type, request.header("origin"), tuple(extra)))

    def open_body(self, request: Request, *, buffer_size: int, idle_timeout: float) -> Http2Body:
        self.body.step = buffer_size
        self.body.idle_timeout = idle_timeout
        return self.body

    def open_response(
        self,
        request: Request,
        content_length: int | None,
        headers: Callable[[Headers], Headers],
        *,
        status: int = 200,
    ) -> Sink:
        framing = () if content_length is None else (("Content-Length", str(content_length)),)
        self.pending_head = (status, headers(framing))
        self.exchange.status = status
        return Sink(Http2Writer(self), Framing.CLOSE, b"")

    # sending --------------------------------------------------------------------------------

    def start_response(self) -> None:
        """Send the response head (HEADERS) if it has not gone yet."""
        if self.head_sent or self.pending_head is None:
            return
        status, headers = self.pending_head
        self.head_sent = True
        self.connection.h2.send_headers(self.stream_id, response_fields(status, headers))

    def send_data_now(self, pieces: list[Segment], total: int) -> int:
        """DATA frames for as much of `pieces` as the windows and the outbound buffer take now."""
        connection = self.connection
        conn = connection.h2
        try:
            window = conn.local_flow_control_window(self.stream_id)
        except h2.exceptions.StreamClosedError:
            raise BrokenPipeError("HTTP/2 stream closed") from None
        budget = min(total, window, OUT_LIMIT - connection.buffered)
        if budget <= 0:
            connection.flush()
            return 0
        frame = conn.max_outbound_frame_size
        sent = 0
        for piece in pieces:
            if sent >= budget:
                break
            view = memoryview(piece)[: budget - sent]
            for start in range(0, len(view), frame):
                conn.send_data(self.stream_id, view[start : start + frame])
            sent += len(view)
        connection.sent_data(sent)
        connection.flush()
        return sent

    async def wait_room(self) -> None:
        """Until this stream may send more (its window or the buffer opened), or it is gone."""
        connection = self.connection
        while not self.is_gone and not connection.closed:
            try:
                window = connection.h2.local_flow_control_window(self.stream_id)
            except h2.exceptions.StreamClosedError:
                return
            if window > 0 and connection.buffered < OUT_LIMIT:
                return
            await connection.room()

    async def send_all(self, data: bytes, *, end: bool) -> bool:
        """Send `data` (the head first if due), waiting for room; `end`: and END_STREAM. False if gone."""
        view = memoryview(data)
        try:
            self.start_response()
            while view:
                if self.is_gone or self.connection.closed:  # (wait_room returns at once for either)
                    return False
                sent = self.send_data_now([view], len(view))
                view = view[sent:]
                if view:
                    await self.wait_room()
            if end and not self.ended:
                self.ended = True
                self.connection.h2.end_stream(self.stream_id)
                self.connection.flush()
        except (h2.exceptions.ProtocolError, BrokenPipeError):
            return False
        return not self.is_gone

    # the stream's task ------------------------------------------------------------------------

    async def run(
        self, respond: Callable[[Http2Stream, Request], Awaitable[object]], request: Request
    ) -> None:
        self._head_request = request.method == "HEAD"
        try:
            await respond(self, request)
        except trio.Cancelled:
            self.close_mode = CloseMode.ABORT
            raise
        except Exception:
            log.exception("internal error on an HTTP/2 stream from %s", self.peer)
            self.close_mode = CloseMode.ABORT
        finally:
            self.finish()

    async def run_error(self, error: PipeError) -> None:
        try:
            await self.send_error(error, None)
        finally:
            self.finish()
            log_exchange(self.exchange)

    def finish(self) -> None:
        """The stream's task is done: end it as its close mode says (a cut response: RST_STREAM)."""
        connection = self.connection
        connection.stream_done(self.stream_id)
        if self.is_gone or connection.closed:
            return
        conn = connection.h2
        try:
            if self.close_mode is CloseMode.ABORT:
                conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
            else:
                if not self.ended:
                    if not self.head_sent and self.pending_head is None:
                        self.pending_head = (HTTPStatus.INTERNAL_SERVER_ERROR, ())
                    self.start_response()
                    self.ended = True
                    conn.end_stream(self.stream_id)
                if not self.body.ended:  # (its upload is not wanted: reset once the answer is read)
                    connection.linger(self.stream_id)
        except h2.exceptions.ProtocolError:
            pass
        connection.flush()
