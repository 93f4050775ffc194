# HTTP/2 connections (h2c by prior knowledge, h2 by ALPN): the h2 library's state machine on our socket.
# Invariant: one reader feeds h2, a batch a turn, within the connection's budgets; frames leave in order.
"""One reader task feeds the socket's bytes to h2 and its events to the streams (http2_stream); each
request stream runs in its own task and is a `Responder` (so a party's `Link`): the hub, relay and
engine serve it as they serve an HTTP/1.1 connection. Outbound frames go to one buffer, written at once
where the socket takes them, else by a flusher task; writers wait while it holds OUT_LIMIT bytes or
their window is shut, so a slow HTTP/2 receiver paces the transfer like a slow socket does.

Abuse (core.abuse): the reader hands h2 one batch of frames per turn of the loop and charges the
connection's budgets (resets, streams that are not parties, control frames, decoded header bytes);
one spent ends it with GOAWAY ENHANCE_YOUR_CALM. A stream reset in the batch that opened it never
gets a task; streams whose task still runs, reset or not, count against MAX_STREAMS. Reading stops
while more than OUT_PAUSE bytes wait for a client that does not read."""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hyperframe.frame
import trio

from ..config import Config
from ..core.abuse import (
    BATCH_BLOCKS,
    BATCH_FRAMES,
    ENCODED_WEIGHT,
    Batch,
    Budget,
    FrameScanner,
    Glitches,
    Violation,
)
from ..core.http2 import CONNECTION_WINDOW, MAX_STREAMS, STREAM_WINDOW, request_from_fields, server_state
from ..core.lingering import Lingering
from ..core.routing import Request
from ..errors import PipeError
from .abuse_log import ended_for_abuse
from .http2_out import Outbound
from .http2_stream import OUT_LIMIT, Http2Stream
from .link import WRITE_TIMEOUT, CloseMode, linger
from .telemetry import Exchange
from .tls import TlsSocket

log = logging.getLogger("pipe_relay")

READ_SIZE = 256 * 1024
OUT_PAUSE = OUT_LIMIT + 64 * 1024
"""Past this many bytes waiting for the client, nothing more is read from it (writers stop at
OUT_LIMIT; the rest is h2's own answers: PING and SETTINGS ACKs, resets)."""
TURN_BYTES = 1 << 20
"""Bytes the reader hands h2 before it lets other tasks run (also after a full batch of frames or
requests; and whenever the socket runs dry): a body's worth of DATA per turn, as over HTTP/1.1."""
ENCODER_TABLE = 4096
"""Our HPACK encoder's table at most, whatever SETTINGS_HEADER_TABLE_SIZE the client offers."""
LINGER_BYTES = 1 << 20
"""What an ended attacker may still send while its GOAWAY goes out (then the close resets)."""
__all__ = ["OUT_LIMIT", "STREAM_WINDOW", "Http2Connection", "Http2Stream"]


def _short_body_repr(frame: hyperframe.frame.DataFrame) -> str:
    return f"<{len(frame.data)} bytes>"


# h2 formats every frame it receives for its trace log before it asks whether anyone logs (`repr(frame)`
# in H2Connection._receive_frame), and a DATA frame's repr hexlifies its whole payload: measured, 28 % of
# the server's time in an h2c transfer. A DATA frame's repr names its size instead.
hyperframe.frame.DataFrame._body_repr = _short_body_repr  # type: ignore[method-assign,assignment]


class Http2Connection:
    """One client's HTTP/2 connection: its h2 state, its outbound buffer, its streams."""

    def __init__(
        self,
        sock: socket.socket | TlsSocket,
        config: Config,
        peer: str,
        respond: Callable[[Http2Stream, Request], Awaitable[object]],
        *,
        head_deadline: float,
        received: bytes = b"",
    ) -> None:
        self.sock = sock
        self.config = config
        self.peer = peer
        self._respond = respond
        self._deadline = head_deadline
        self.h2 = server_state(config.max_head_size)
        self.streams: dict[int, Http2Stream] = {}
        self.lingering = Lingering()
        """Streams answered in full whose upload still comes: reset when the client had time to read."""
        self.closed = False
        """Gone, or given up on: no stream is served any more."""
        self.out = Outbound(sock, self.h2, self._lost)
        self._read_scope: trio.CancelScope | None = None
        self.close_mode = CloseMode.NORMAL
        self._scanner = FrameScanner(max_header_block=config.max_head_size)
        self.glitches = Glitches(config.flood_limits)
        self.ended_for: Budget | Violation | None = None
        """The budget spent (or the frame refused) that ended this connection, if one did."""
        self._goaway_at: int | None = None  # the last stream id of our drain's GOAWAY
        self._turn = 0  # bytes handed to h2 since the reader last let other tasks run
        self._received = received  # (read before this connection was made: its preface at least)
        self.protocol = "h2" if isinstance(sock, TlsSocket) else "h2c"

    def __repr__(self) -> str:
        state = "closed" if self.closed else "draining" if self._goaway_at is not None else "open"
        return f"<Http2Connection peer={self.peer!r} streams={len(self.streams)} {state}>"

    async def serve(self) -> None:
        """Serve streams until the client goes, errs, spends a budget, or idles past the head deadline
        with none open."""
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.out.run)
                self.flush()
                await self._read(nursery)
                self._lost()
                nursery.cancel_scope.cancel()  # (the flusher; streams ended with the connection)
        finally:
            self._lost()

    async def _read(self, nursery: trio.Nursery) -> None:
        sock = self.sock
        data, self._received = self._received, b""  # (what came first: taken, so that nothing holds it)
        while not self.closed:
            if self.lingering.deadlines:
                self._end_lingering()
            if data:
                data = await self._receive(data, nursery)
                if (data or self.buffered > OUT_PAUSE) and not await self._drained():
                    return  # (a client that reads nothing of what it asked for)
                continue
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                if isinstance(sock, TlsSocket) and sock.pending():
                    continue
                self._turn = 0  # (the wait is a turn of the loop)
                with trio.CancelScope(deadline=self._idle_deadline()) as waited:
                    self._read_scope = waited
                    await trio.lowlevel.wait_readable(sock)
                self._read_scope = None
                if waited.cancelled_caught and not self.streams and trio.current_time() >= self._deadline:
                    self.h2.close_connection(last_stream_id=self._goaway_at)  # (idle, or drained)
                    self.flush()
                    return
                continue
            except OSError:
                return
            if not data:
                return

    async def _receive(self, data: bytes, nursery: trio.Nursery) -> bytes:
        """Hand `data` to h2 a batch at a time (a turn of the loop each), judging every batch; what
        is left when the client stops reading our answers is returned, to be taken later."""
        view = memoryview(data)
        start = 0
        while start < len(view) and not self.closed:
            begin = start
            batch = self._scanner.next_batch(view, start)
            events: list[h2.events.Event] = []
            if batch.end > start:
                try:
                    events = self.h2.receive_data(view[start : batch.end])
                except h2.exceptions.ProtocolError as exc:
                    log.debug("HTTP/2 protocol error from %s: %s", self.peer, exc)
                    self.flush()  # (h2 queued its GOAWAY)
                    self._lost()
                    return b""
            start = batch.end
            now = trio.current_time()
            self._charge(batch, now)
            self._dispatch_all(events, nursery, now)
            if batch.violation is not None:
                self._calm_down(batch.violation)
            self.flush()
            self._turn += batch.end - begin
            if self._turn >= TURN_BYTES or batch.frames >= BATCH_FRAMES or batch.blocks >= BATCH_BLOCKS:
                self._turn = 0
                await trio.lowlevel.checkpoint()  # (one turn's share of the loop is taken)
            if self.buffered > OUT_PAUSE and start < len(view):
                return bytes(view[start:])
        return b""

    async def _drained(self) -> bool:
        """Wait (up to WRITE_TIMEOUT) until what waits for the client has gone; False if it has not."""
        if await self.out.drained(OUT_LIMIT, WRITE_TIMEOUT):
            return True
        log.info("HTTP/2 client %s reads none of the %d bytes it was sent: closed", self.peer, self.buffered)
        self.close_mode = CloseMode.ABORT
        return False

    def _idle_deadline(self) -> float:
        return min(float("inf") if self.streams else self._deadline, self.lingering.next_deadline())

    def stream_done(self, stream_id: int) -> None:
        """A stream's task ended: with none left, the connection may idle until the head deadline."""
        self.streams.pop(stream_id, None)
        if not self.streams:
            self._deadline = trio.current_time() + self.config.header_timeout
            if self._goaway_at is not None:
                self._deadline = -math.inf  # (draining: the last stream is done, so is the connection)
            if self._read_scope is not None:
                self._read_scope.deadline = self._deadline

    def drain(self) -> None:
        """The server drains: GOAWAY (NO_ERROR) now; streams in flight finish, new ones are refused,
        and the connection closes when the last is done (or at once, with none)."""
        if self.closed or self._goaway_at is not None:
            return
        self._goaway_at = self.h2.highest_inbound_stream_id
        for stream_id in self.lingering.all():
            self._reset(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        goaway = hyperframe.frame.GoAwayFrame(0, last_stream_id=self._goaway_at, error_code=0)
        self.out.flush(goaway.serialize())  # (behind h2's back: once h2 has sent a GOAWAY it treats
        self.stream_done(0)  # any frame of a new stream as a protocol error, ending those in flight too)

    # abuse ------------------------------------------------------------------------------------

    def _charge(self, batch: Batch, now: float) -> None:
        glitches = self.glitches
        if not glitches.charge(Budget.CONTROL, batch.control, now):
            self._calm_down(Budget.CONTROL)
        elif not glitches.charge(Budget.WINDOW_UPDATES, batch.window_updates, now):
            self._calm_down(Budget.WINDOW_UPDATES)
        elif not glitches.charge(Budget.HEADER_BYTES, ENCODED_WEIGHT * batch.encoded, now):
            self._calm_down(Budget.HEADER_BYTES)

    def _spend(self, budget: Budget, cost: float, now: float) -> bool:
        if self.glitches.charge(budget, cost, now):
            return True
        self._calm_down(budget)
        return False

    def _calm_down(self, reason: Budget | Violation) -> None:
        """A budget is spent: GOAWAY ENHANCE_YOUR_CALM, read nothing more; the streams end with it."""
        if self.ended_for is not None or self.closed:
            return
        self.ended_for = reason
        ended_for_abuse(self.peer, "GOAWAY ENHANCE_YOUR_CALM", reason)
        self.h2.close_connection(  # (its debug data names the budget: for the client's developer)
            error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, additional_data=reason.name.lower().encode()
        )
        self.flush()
        self._lost()  # (now, not when the reader returns: a stream may run before that, its connection shut)

    def sent_data(self, size: int) -> None:
        self.glitches.data_sent(size)

    def party_stream(self) -> None:
        """A stream turned out a pipe party or watcher: it does not count as a page stream."""
        self.glitches.refund(Budget.STREAMS, 1)

    # events -----------------------------------------------------------------------------------

    def _dispatch_all(self, events: list[h2.events.Event], nursery: trio.Nursery, now: float) -> None:
        reset_now = {e.stream_id for e in events if isinstance(e, h2.events.StreamReset)}
        for event in events:
            if self.closed:
                return
            if isinstance(event, h2.events.RequestReceived):
                self._open(event, nursery, now, reset_now)
            else:
                self._dispatch(event, now)

    def _open(
        self, event: h2.events.RequestReceived, nursery: trio.Nursery, now: float, reset_now: set[int]
    ) -> None:
        stream_id = event.stream_id
        fields = event.headers or []
        if not self._spend(Budget.HEADER_BYTES, sum(len(n) + len(v) + 32 for n, v in fields), now):
            return
        if not self._spend(Budget.STREAMS, 1, now):
            return
        if stream_id in reset_now:  # (reset in the batch that opened it: no task, ever)
            self._spend(Budget.RESETS, 1, now)
            return
        if self._goaway_at is not None:
            return  # (past our GOAWAY's last stream: ignored, as RFC 9113 6.8 says; the client retries)
        if len(self.streams) >= MAX_STREAMS:
            self._spend(Budget.RESETS, 1, now)
            self._refuse(stream_id)
            return
        stream = Http2Stream(self, stream_id, Exchange(self.protocol, self.peer, began=now))
        self.streams[stream_id] = stream
        if self._read_scope is not None:
            self._read_scope.deadline = float("inf")
        try:
            request = request_from_fields(fields)
        except PipeError as exc:
            nursery.start_soon(stream.run_error, exc)
            return
        if event.stream_ended is not None:
            stream.body.end()
        nursery.start_soon(stream.run, self._respond, request)

    def _refuse(self, stream_id: int) -> None:
        self._reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, code)

    def linger(self, stream_id: int) -> None:
        """`stream_id` is answered in full, its upload still comes: reset it (NO_ERROR) once the
        client has had time to read the answer (core.lingering), or now if too many linger."""
        if self._goaway_at is not None or not self.lingering.add(stream_id, trio.current_time()):
            self._reset(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        elif self._read_scope is not None:
            self._read_scope.deadline = min(self._read_scope.deadline, self.lingering.next_deadline())

    def _end_lingering(self) -> None:
        expired = self.lingering.expired(trio.current_time())
        for stream_id in expired:
            self._reset(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        if expired:
            self.flush()

    def _open_window(self, size: int) -> None:
        if size:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.increment_flow_control_window(size)
            self.flush()

    def _dispatch(self, event: h2.events.Event, now: float) -> None:
        stream_id = getattr(event, "stream_id", 0)
        known = self.streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.DataReceived):
            if known is not None and event.data is not None and not known.body.discarding:
                known.body.feed(event.data, event.flow_controlled_length or 0)
            elif stream_id in self.lingering:  # (answered: dropped, only the connection's window opens)
                self._open_window(self.lingering.drop(event.flow_controlled_length or 0))
            else:  # (nobody reads it: dropped, its window given back, and counted as a control frame,
                self.acknowledge(event.flow_controlled_length or 0, stream_id)  # as the client could
                self._spend(Budget.CONTROL, 1, now)  # keep it coming at no cost to itself)
        elif isinstance(event, h2.events.StreamEnded):
            if known is not None:
                known.body.end()
            self.lingering.forget(stream_id)
        elif isinstance(event, h2.events.StreamReset):
            if known is not None:
                known.gone()
                self._spend(Budget.RESETS, 1, now)
            self.lingering.forget(stream_id)
            self._wake()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            encoder = self.h2.encoder
            if encoder.header_table_size > ENCODER_TABLE:
                encoder.header_table_size = ENCODER_TABLE
            self._wake()
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._lost()

    def acknowledge(self, size: int, stream_id: int) -> None:
        """`size` bytes of `stream_id` were taken: open its window (and the connection's) again."""
        if size:
            try:  # (h2 opens the connection's window even for a stream closed since)
                self.h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.ProtocolError:
                return
            self.flush()

    def flush(self) -> None:
        """Move h2's frames to the outbound buffer and write what the socket takes now."""
        self.out.flush()

    def _wake(self) -> None:
        self.out.wake()

    async def room(self) -> None:
        await self.out.room()

    @property
    def buffered(self) -> int:
        return self.out.buffered

    def _lost(self) -> None:
        """The connection is gone (or given up): every stream's party learns so at once."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.gone()
        self._wake()

    async def drain_out(self, seconds: float) -> None:
        """Before the close: let what is buffered go out (a bounded wait). A connection ended for
        abuse then half-closes and drops what the client still sends, for a moment, so that its
        GOAWAY is read rather than lost to the reset a close with unread bytes would send."""
        await self.out.drain(seconds)
        if self.ended_for is not None and not self.out.broken:
            with contextlib.suppress(OSError):
                await linger(self.sock, limit=LINGER_BYTES)
