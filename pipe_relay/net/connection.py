# One HTTP/1.1 client connection: h11 parses heads and frames small replies; as a party's Link, its bodies.
# Invariant: the socket is closed exactly once, by `close()`, in the mode the last user asked for.
from __future__ import annotations

import select
import socket
import struct
from collections.abc import Callable
from http import HTTPStatus

import h11
import trio

from ..config import Config
from ..core.abuse import Budget, Meter
from ..core.framing import receiver_framing, render_head
from ..core.heads import (
    MAX_HEADER_LINES,
    check_head,
    has_obs_fold,
    head_lines,
    kept_headers,
    parser_error,
)
from ..core.replies import Reply, StreamedReply, error_reply, interim_continue, refusal
from ..core.routing import Request
from ..errors import ErrorCode, PipeError, pipe_error
from .abuse_log import ended_for_abuse
from .body import SocketBody, body_decoder
from .engine import Sink, SocketWriter, Writer
from .link import WRITE_TIMEOUT, CloseMode, Headers, Role, linger
from .liveness import answered, unread
from .telemetry import TALLY, Exchange
from .tls import TlsBody, TlsSocket, TlsWriter

READ_SIZE = 64 * 1024
_COUNT_LINES_PAST = 2048
"""A head this long has its lines counted before h11 parses it (h11 takes 10 ms for 7,000 tiny
headers; under 2 KiB there are at most a few hundred, and check_head refuses them after h11)."""
LINGER_LIMIT = 16 * 1024 * 1024
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_RESET = struct.pack("ii", 1, 0)


class HttpConnection:
    """One client's socket: its request heads and small replies; for a pipe party, the `Link`
    (the HTTP/1.1 way to stream status lines, read a body, frame a receiver's response)."""

    def __init__(
        self,
        sock: socket.socket | TlsSocket,
        config: Config,
        peer: str | None = None,
        *,
        head_deadline: float | None = None,
        received: bytes = b"",
        secure: bool | None = None,
    ) -> None:
        self.sock = sock
        """A non-blocking stdlib socket, or one with TLS on it: waits go through trio's epoll."""
        self.config = config
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_head_size)
        self.close_mode = CloseMode.NORMAL
        self._request_has_body = False
        self._body_length: int | None = 0  # the current request's (None: chunked)
        self._head_request = False
        self._fed = bytearray()  # the bytes fed to h11 for the current head (and what came with it)
        self._fresh = True  # nothing fed to h11 yet: asking it for an event would only say NEED_DATA
        self._peer: str | None = peer  # (the accept loop knows it: no getpeername)
        if head_deadline is None:  # (made at accept; a TLS handshake took its time from it already)
            head_deadline = trio.current_time() + config.header_timeout
        self._head_deadline = head_deadline
        self._received = received  # (read before this connection was made: its first bytes)
        self.waiting_for_head = False
        """Blocked until the next bytes of a request head come (a drain may end the wait)."""
        burst, rate = config.flood_limits.streams
        self._requests = Meter(rate=rate, burst=burst)  # (a connection's requests: parties end it)
        self.last_reply = False
        """The client spent its requests' budget: this reply is the connection's last."""
        self._secure = isinstance(sock, TlsSocket) if secure is None else secure
        self.head_bytes = b""
        """The current request's head as it came, until it is served here (`serving`): a connection
        handed to another worker takes it along."""
        self.handed_off = False
        """Given to another worker: the socket is its now, and our close must not touch the connection."""
        self.exchange = Exchange("tls" if self._secure else "http1", self._peer or "")
        """The current request, for the access log (`respond` makes one per request)."""

    @property
    def peer(self) -> str:
        """The client's IP address ("" if unknown); looked up once, when first needed."""
        if self._peer is None:
            try:
                self._peer = str(self.sock.getpeername()[0])
            except OSError:
                self._peer = ""
        return self._peer

    def __repr__(self) -> str:
        return f"<HttpConnection peer={self.peer!r} close={self.close_mode.value}>"

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def body_prefix(self) -> bytes:
        """Bytes already received past the current request head (the start of its body)."""
        return self._h11.trailing_data[0]

    async def read_request(self) -> Request | None:
        """The next request head; None when the client closes, or idles past the head deadline
        before it sent any byte of it.

        Raises PipeError for a malformed, oversized or (past the deadline) incomplete head.
        """
        deadline = self._head_deadline
        while True:
            try:
                event = h11.NEED_DATA if self._fresh else self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise parser_error(
                    exc.error_status_hint, str(exc), max_head_size=self.config.max_head_size
                ) from None
            if event is h11.NEED_DATA:
                try:
                    data = await self._receive(deadline)
                except OSError:
                    return None
                if data is None:  # the head deadline passed
                    if self._fed:
                        raise pipe_error(ErrorCode.HEAD_TIMEOUT, seconds=f"{self.config.header_timeout:g}")
                    return None
                self._h11.receive_data(data)
                self._fresh = False
                self._fed += data  # (bounded: h11 stops past the head size)
                if len(self._fed) > _COUNT_LINES_PAST and head_lines(self._fed) > MAX_HEADER_LINES + 1:
                    raise pipe_error(ErrorCode.TOO_MANY_HEADERS, max=MAX_HEADER_LINES)
                continue
            if isinstance(event, h11.Request):
                # h11 bounds only incomplete heads; a head completed by one large read is checked here
                head_size = len(self._fed) - len(self._h11.trailing_data[0])
                if head_size > self.config.max_head_size:
                    raise pipe_error(ErrorCode.HEAD_TOO_LARGE, max=self.config.max_head_size)
                request = self._request(event)
                folded = has_obs_fold(memoryview(self._fed)[:head_size])
                self.head_bytes = bytes(memoryview(self._fed)[:head_size])
                self._fed = bytearray()
                check_head(request, header_lines=len(event.headers), folded=folded)
                if not self._requests.spend(1, trio.current_time()):
                    self.last_reply = True  # (its reply says `Connection: close`; then it closes)
                    ended_for_abuse(self.peer, "closed", Budget.STREAMS)
                return request
            return None  # ConnectionClosed, or PAUSED after a close

    async def _receive(self, deadline: float) -> bytes | None:
        """Bytes from the client (b"" at its end), or None if `deadline` passes first."""
        if self._received:
            data, self._received = self._received, b""
            return data
        sock = self.sock
        while True:
            try:  # most heads are already in the socket: read them without trio's wait path
                return sock.recv(READ_SIZE)
            except BlockingIOError:
                pass
            self.waiting_for_head = True
            try:
                with trio.move_on_at(deadline):
                    await trio.lowlevel.wait_readable(sock)
                    continue
            except trio.ClosedResourceError:
                pass  # a drain woke this wait (`notify_closing`): the connection ends here
            finally:
                self.waiting_for_head = False
            return None

    def _request(self, event: h11.Request) -> Request:
        # raw_items() is a plain list; iterating h11's Headers goes through Sequence.__iter__ per item
        request = Request(
            method=event.method.decode("ascii", "replace"),
            target=event.target.decode("latin-1"),
            headers=kept_headers(event.headers.raw_items()),
            http_version=event.http_version.decode("ascii"),
            secure=self._secure,
        )
        length = request.header("content-length")
        chunked = request.header("transfer-encoding") is not None
        self._request_has_body = chunked or length not in (None, "0")
        self._body_length = None if chunked else int(length or 0)  # (h11 checked it)
        self._head_request = request.method == "HEAD"
        return request

    def serving(self, role: Role) -> None:
        """The request is served here: its head's bytes are not needed for a hand-off (nor kept
        while a party waits). (A body that is not read is framed by h11 and dropped by the close.)"""
        self.head_bytes = b""

    async def send_reply(self, reply: Reply) -> None:
        """Send a complete small response through h11 (headers only, for a HEAD request); one that
        cannot go out in time is cut with a reset, so its client never reads it as complete. The
        `last_reply` says `Connection: close`, and the connection lingers, then closes."""
        if self.last_reply:
            reply = Reply(reply.status, (*reply.headers, ("Connection", "close")), reply.body)
            self.close_mode = CloseMode.LINGER
        response = h11.Response(
            status_code=reply.status,
            headers=[(name.encode("ascii"), value.encode("latin-1")) for name, value in reply.headers],
            reason=HTTPStatus(reply.status).phrase.encode("ascii"),
        )
        data = self._h11.send(response)
        if reply.body and not self._head_request:
            data = (data or b"") + (self._h11.send(h11.Data(data=reply.body)) or b"")
        data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        self.exchange.status = reply.status
        if not await self.send_raw(data):
            self.close_mode = CloseMode.ABORT

    async def send_error(self, error: PipeError, origin: str | None, *, last: bool = False) -> None:
        """Reject the current request. The connection closes afterwards if a body may follow, or
        if this is its `last` reply (a party's: said with `Connection: close`)."""
        reply = error_reply(error, origin=origin)
        self.exchange.error = error.code.value
        TALLY.error(error.code)
        if last and not self.last_reply:
            reply = Reply(reply.status, (*reply.headers, ("Connection", "close")), reply.body)
        await self.send_reply(reply)
        if self._request_has_body:
            self.close_mode = CloseMode.LINGER

    async def answer_continue(self, request: Request) -> None:
        interim = interim_continue(request.header("expect"), request.http_version)
        if interim:
            await self.send_raw(interim)

    async def send_raw_error(self, error: PipeError) -> None:
        """Reject a request h11 could not parse (h11 can no longer frame replies)."""
        self.exchange.status, self.exchange.error = error.status, error.code.value
        TALLY.error(error.code)
        await self.send_raw(refusal(error))
        self.close_mode = CloseMode.LINGER

    def next_cycle(self) -> bool:
        """After a reply: ready for another request on this connection?"""
        if self.close_mode is CloseMode.ABORT:
            return False
        if self._h11.their_state is h11.SEND_BODY:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError:
                return False
            if not isinstance(event, h11.EndOfMessage):
                self.close_mode = CloseMode.LINGER
                return False
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._head_deadline = trio.current_time() + self.config.header_timeout
            self._fed = bytearray(self._h11.trailing_data[0])
            return True
        return False

    async def send_raw(self, data: bytes) -> bool:
        """Write bytes outside h11 (pipe responses). False if the peer is gone or stalls."""
        try:  # small replies usually fit the socket buffer: one send, no wait, no cancel scope
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent == len(data):
            return True
        return await self._send_rest(memoryview(data)[sent:])

    async def _send_rest(self, view: memoryview) -> bool:
        sock = self.sock
        with trio.move_on_after(WRITE_TIMEOUT):
            while view:
                await trio.lowlevel.wait_writable(sock)
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    continue
                except OSError:
                    return False
            return True
        return False

    @property
    def idle(self) -> bool:
        """Between requests, with no byte of the next one received (by us or by the kernel)?"""
        if self._fed or (isinstance(self.sock, TlsSocket) and self.sock.pending()):
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return not poller.poll(0)

    def drain(self) -> None:
        """The server drains: a wait for a head of which nothing came ends now (as if closed)."""
        if self.waiting_for_head and self.idle:
            trio.lowlevel.notify_closing(self.sock)

    @property
    def hangup_fd(self) -> int:
        return self.sock.fileno()

    def on_gone(self, callback: Callable[[], None]) -> None:
        """(A socket's hang-up reaches a waiting party through `hangup_fd`.)"""

    async def wait_gone(self) -> None:
        await trio.lowlevel.wait_readable(self.sock)

    async def still_there(self) -> bool:
        """A client whose whole body is here counts as there (whatever it did since: its body can
        be delivered). Else only one whose bytes wait unread here can have its close hidden behind
        them; that one is asked (`answered`)."""
        waiting = unread(self.fd)
        if self._body_length is not None and waiting >= self._body_length - len(self.body_prefix):
            return True
        if self.peer_closed():
            return False
        return True if waiting == 0 else await answered(self.sock, self.peer_closed)

    def open_stream(
        self, request: Request, content_type: str, *, extra: Headers = (), answer_continue: bool = False
    ) -> Http1Stream:
        reply = StreamedReply(request.http_version)
        opening = interim_continue(request.header("expect"), request.http_version) if answer_continue else b""
        opening += reply.head(content_type, origin=request.header("origin"), extra=tuple(extra))
        self.exchange.status = 200
        return Http1Stream(self, reply, opening)

    def open_body(self, request: Request, *, buffer_size: int, idle_timeout: float) -> SocketBody:
        sock = self.sock
        if isinstance(sock, TlsSocket):
            return TlsBody(
                sock,
                body_decoder(request),
                self.body_prefix,
                buffer_size=buffer_size,
                idle_timeout=idle_timeout,
            )
        return SocketBody(
            sock,
            body_decoder(request),
            self.body_prefix,
            buffer_size=buffer_size,
            idle_timeout=idle_timeout,
        )

    def open_response(
        self,
        request: Request,
        content_length: int | None,
        headers: Callable[[Headers], Headers],
        *,
        status: int = 200,
    ) -> Sink:
        """Length, chunked or close-delimited, as `receiver_framing` decides for the receiver's version."""
        framing = receiver_framing(content_length, request.http_version)
        head = render_head(framing.http_version, status, headers(framing.headers))
        self.exchange.status = status
        sock = self.sock
        writer: Writer = TlsWriter(sock) if isinstance(sock, TlsSocket) else SocketWriter(self.fd)
        return Sink(writer, framing.framing, head)

    def peer_closed(self) -> bool:
        """Has the peer closed or reset its side? (Linux: POLLRDHUP; elsewhere: unknown -> False)."""
        if not _POLLRDHUP:
            return False
        poller = select.poll()
        poller.register(self.fd, _POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))

    async def close(self) -> None:
        """Close the socket in the chosen mode. Never raises for an already-broken peer."""
        if self.handed_off:
            self.sock.close()  # (our descriptor only: the worker it went to has the connection)
            return
        try:
            if self.close_mode is CloseMode.ABORT:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            elif self.close_mode is CloseMode.LINGER:
                await linger(self.sock, limit=LINGER_LIMIT)  # (a TLS shutdown sends close_notify first)
            elif isinstance(self.sock, TlsSocket):
                self.sock.close_notify()
        except OSError:
            pass
        finally:
            # No notify_closing: nothing waits on this socket now (a receiver's socket is closed only
            # after the sender's task let go of it), and the kernel drops a closed fd from epoll.
            self.sock.close()


class Http1Stream:
    """A streamed 200 response on an HTTP/1.1 connection: chunked (HTTP/1.0: ended by the close)."""

    def __init__(self, conn: HttpConnection, reply: StreamedReply, opening: bytes) -> None:
        self._conn = conn
        self._reply = reply
        self._opening = opening  # the head (and interim 100), sent with the first data

    async def send(self, data: bytes, *, end: bool = False) -> bool:
        reply = self._reply
        out = self._opening + (reply.frame(data) if data else b"") + (reply.end if end else b"")
        self._opening = b""
        return await self._conn.send_raw(out) if out else True
