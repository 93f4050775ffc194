# HTTP/2 connections (h2c by prior knowledge, h2 by ALPN): the h2 library's state machine on our socket.
# Invariant: one reader feeds h2; frames leave in order through one buffer; its end reaches every stream.
"""One reader task feeds the socket's bytes to h2 and its events to the streams (http2_stream); each
request stream runs in its own task and is a `Responder` (so a party's `Link`): the hub, relay and
engine serve it as they serve an HTTP/1.1 connection. Outbound frames go to one buffer, written at once
where the socket takes them, else by a flusher task; writers wait while it holds OUT_LIMIT bytes or
their window is shut, so a slow HTTP/2 receiver paces the transfer like a slow socket does."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
import trio

from ..config import Config
from ..core.http2 import request_from_fields
from ..core.routing import Request
from ..errors import PipeError
from .http2_stream import OUT_LIMIT, Http2Stream
from .link import CloseMode
from .tls import TlsSocket

log = logging.getLogger("pipe_relay")

READ_SIZE = 256 * 1024
STREAM_WINDOW = 1 << 20
"""The receive window each request body gets (bytes we may hold for it before the relay takes them)."""
CONNECTION_WINDOW = 8 << 20
MAX_FRAME = 1 << 20
"""The largest DATA frame we accept (SETTINGS_MAX_FRAME_SIZE): fewer frames per MiB."""
MAX_STREAMS = 128
__all__ = ["OUT_LIMIT", "Http2Connection", "Http2Stream"]


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
    ) -> None:
        self.sock = sock
        self.config = config
        self.peer = peer
        self._respond = respond
        self._deadline = head_deadline
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.h2.max_inbound_frame_size = MAX_FRAME  # (h2 reads its class default only when made)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_head_size,
            },
        )
        self.streams: dict[int, Http2Stream] = {}
        self.closed = False
        """Gone, or given up on: no stream is served any more."""
        self.broken = False
        """The socket failed: nothing more can be written to it."""
        self._read_scope: trio.CancelScope | None = None
        self._out = bytearray()
        self._out_waiting = trio.Event()  # the flusher's: set when bytes wait for the socket
        self._room = trio.Event()  # writers': set when a window opens or the buffer drains
        self.close_mode = CloseMode.NORMAL

    def __repr__(self) -> str:
        return f"<Http2Connection peer={self.peer!r} streams={len(self.streams)} closed={self.closed}>"

    async def serve(self, first: bytes = b"") -> None:
        """Serve streams until the client goes, errs, or idles past the head deadline with none open
        (`first`: what was read of the connection already, its preface at least)."""
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._flusher)
                self.flush()
                if first:
                    self._receive(first, nursery)
                await self._read(nursery)
                self._lost()
                nursery.cancel_scope.cancel()  # (the flusher; streams ended with the connection)
        finally:
            self._lost()

    async def _read(self, nursery: trio.Nursery) -> None:
        sock = self.sock
        while not self.closed:
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                if isinstance(sock, TlsSocket) and sock.pending():
                    continue
                with trio.CancelScope(deadline=self._idle_deadline()) as waited:
                    self._read_scope = waited
                    await trio.lowlevel.wait_readable(sock)
                self._read_scope = None
                if waited.cancelled_caught and not self.streams:
                    self.h2.close_connection()  # (GOAWAY: idle past the head deadline)
                    self.flush()
                    return
                continue
            except OSError:
                return
            if not data:
                return
            self._receive(data, nursery)

    def _idle_deadline(self) -> float:
        return float("inf") if self.streams else self._deadline

    def stream_done(self, stream_id: int) -> None:
        """A stream's task ended: with none left, the connection may idle until the head deadline."""
        self.streams.pop(stream_id, None)
        if not self.streams:
            self._deadline = trio.current_time() + self.config.header_timeout
            if self._read_scope is not None:
                self._read_scope.deadline = self._deadline

    def _receive(self, data: bytes, nursery: trio.Nursery) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("HTTP/2 protocol error from %s: %s", self.peer, exc)
            self.flush()  # (h2 queued its GOAWAY)
            self.closed = True
            return
        for event in events:
            self._dispatch(event, nursery)
        self.flush()

    def _dispatch(self, event: h2.events.Event, nursery: trio.Nursery) -> None:
        if isinstance(event, h2.events.RequestReceived):
            stream_id = event.stream_id
            stream = Http2Stream(self, stream_id)
            self.streams[stream_id] = stream
            if self._read_scope is not None:
                self._read_scope.deadline = float("inf")
            try:
                request = request_from_fields(event.headers or [])
            except PipeError as exc:
                nursery.start_soon(stream.run_error, exc)
                return
            if event.stream_ended is not None:
                stream.body.end()
            nursery.start_soon(stream.run, self._respond, request)
            return
        stream_id = getattr(event, "stream_id", 0)
        known = self.streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.DataReceived):
            if known is not None and event.data is not None:
                known.body.feed(event.data, event.flow_controlled_length or 0)
            else:  # (a stream we no longer serve: its window must not shut the connection's)
                self.acknowledge(event.flow_controlled_length or 0, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if known is not None:
                known.body.end()
        elif isinstance(event, h2.events.StreamReset):
            if known is not None:
                known.gone()
            self._wake()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

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
        data = self.h2.data_to_send()
        if self.broken:
            return
        if self._out:  # (what waits goes first: the new frames queue behind it)
            self._out += data
            data = bytes(self._out)
            self._out.clear()
        if not data:
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True
            self._lost()
            return
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._out_waiting.set()
        else:
            self._wake()

    async def _flusher(self) -> None:
        while True:
            await self._out_waiting.wait()
            self._out_waiting = trio.Event()
            while self._out and not self.broken:
                await trio.lowlevel.wait_writable(self.sock)
                self.flush()
            self._wake()

    def _wake(self) -> None:
        self._room.set()
        self._room = trio.Event()

    async def room(self) -> None:
        await self._room.wait()

    @property
    def buffered(self) -> int:
        return len(self._out)

    def _lost(self) -> None:
        """The connection is gone (or given up): every stream's party learns so at once."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.gone()
        self._wake()

    async def drain_out(self, seconds: float) -> None:
        """Before the close: let what is buffered go out (a bounded wait)."""
        with trio.move_on_after(seconds):
            while self._out and not self.broken:
                await trio.lowlevel.wait_writable(self.sock)
                self.flush()
